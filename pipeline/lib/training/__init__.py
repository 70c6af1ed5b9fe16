"""Fine-tuning (the method and its retention baselines): a loop that reads top to bottom (`loop`),
the trainer that does one step (`trainer`), the retention terms' losses (`terms`), the step schedule
and the validation points (`schedule`), checkpoint selection (`selection`), EWC's Fisher (`fisher`).

    target step:  L = L_cls(NormFace/ArcFace/CosFace) + Σ λ_t·term_t   (terms on target and every batch)
    generic step: L = Σ λ_t·term_t                                     (terms on generic and every batch)

The terms are declared in `pipeline.lib.retention`; every retention method is a choice of λs
(params.yaml `methods.<name>`). The `finetune` stage does the I/O and hands the loop its inputs.
"""
