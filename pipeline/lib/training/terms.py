"""The retention terms' losses, bound to their declarations in `pipeline.lib.retention` by name.

Each is (tuner, batch) -> scalar tensor. `tuner` is the `trainer.FineTuner`; the functions read only
its cfg, params(), anchors, aids (prototypes, fisher), awc_fisher and view.logit_scale.
"""
from __future__ import annotations

from typing import Any

import torch

from pipeline.lib import losses
from pipeline.lib.distributed import gather, mean_over_ranks
from pipeline.lib.retention import GENERIC, Batch



def _global(tuner: Any, tensor: Any) -> Any:
    """The whole global batch of a batch-structure term (Gram, GIFT) under data parallelism."""
    return gather(tensor, tuner.run.world)


def distill(tuner: Any, batch: Batch) -> Any:
    return losses.embedding_distillation_loss(batch.emb, batch.teacher_emb)


def gram(tuner: Any, batch: Batch) -> Any:
    return losses.gram_distillation_loss(_global(tuner, batch.emb), _global(tuner, batch.teacher_emb))


def zero_shot_kl(tuner: Any, batch: Batch) -> Any:
    """KL(teacher ‖ student) of the zero-shot logits over the generic class prompts, temperature τ."""
    tau, text, scale = tuner.cfg.lwf_temperature, tuner.aids.prototypes, tuner.view.logit_scale
    return losses.logit_distillation_loss(losses.zero_shot_logits(batch.emb, text, scale),
                                          losses.zero_shot_logits(batch.teacher_emb, text, scale), tau, tau)


def gift(tuner: Any, batch: Batch) -> Any:
    """GIFT with a frozen text tower: L_cd (T) + gift_ita_weight·L_ita (label smoothing) against each
    generic image's class prompt."""
    cfg, rows = tuner.cfg, _global(tuner, batch.class_rows)
    emb, teacher, text = _global(tuner, batch.emb), _global(tuner, batch.teacher_emb), tuner.aids.prototypes[rows]
    cd = losses.gift_contrastive_distillation(emb, teacher, text, tuner.view.logit_scale, cfg.gift_temperature)
    ita = losses.gift_alignment_loss(emb, text, rows, tuner.view.logit_scale, cfg.gift_label_smoothing)
    return cd + cfg.gift_ita_weight * ita


def weights(tuner: Any, batch: Batch) -> Any:
    return losses.weight_regularizer(tuner.params(), tuner.anchors)


def ewc(tuner: Any, batch: Batch) -> Any:
    return losses.fisher_penalty(tuner.params(), tuner.anchors, tuner.aids.fisher)


def awc(tuner: Any, batch: Batch) -> Any:
    """GIFT's adaptive weight consolidation. On a generic batch the Fisher is refreshed from this
    batch's GIFT loss (as GIFT does every iteration); a target batch uses the latest one (GIFT applies
    the penalty in the same iteration as the target loss). Zero before the first generic batch,
    where θ = θ0 anyway."""
    params = tuner.params()
    if batch.domain == GENERIC:
        tuner.awc_fisher = losses.gift_fisher(batch.values["lambda_gift"], params,
                                              reduce=lambda grads: mean_over_ranks(grads, tuner.run.world))
    if tuner.awc_fisher is None:
        return torch.zeros((), device=params[0].device)
    return losses.fisher_penalty(params, tuner.anchors, tuner.awc_fisher)
