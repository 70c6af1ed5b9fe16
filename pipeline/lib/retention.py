"""The retention terms: one registry that the step schedule, the validation of params and the
training step all read.

A retention method is a choice of weights λ for these terms (params.yaml `methods.<name>`). Each
entry says which `FinetuneCfg` key weighs it, on which batches it runs, what it needs, and how to
compute it. Adding a method that is a new loss term is one entry here plus its λ field in
`FinetuneCfg` (a test checks the two lists are the same).

Batches (`Term.batches`):
  target   the fine-grained batches only (canonical LwF: the old model's logits on the new task's images)
  generic  the generic batches of the round-robin schedule (their images are drawn only when such a term is on)
  every    every batch of the schedule (the weight-space pulls to θ0): on target batches, and on generic
           batches also when no generic-batch loss exists, so a regulariser gets as many updates as in the
           reference's round-robin

Inputs (`Term.inputs`), read by the `finetune` stage to load only what the active terms need:
  teacher_embedding  the teacher's embedding of each generic image (precomputed eval view, or the frozen
                     teacher on the same augmented view with `teacher_targets: online`)
  online_teacher     a frozen copy of θ0 run on the step's own augmented batch
  class_prompts      frozen-text embeddings of the generic train classes' prompts (`features`)
  class_rows         each generic image's row among those prompts, i.e. its generic LABEL
  anchors            θ0 of the vision tower (weight-space pulls; meaningless under LoRA, where θ0 is frozen)
  fisher             EWC's diagonal Fisher, estimated on labelled generic images before training

This module imports no torch at load time (params validation runs in light stages); the loss
functions import it when they run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

TARGET, GENERIC, EVERY = "target", "generic", "every"
BATCHES = (TARGET, GENERIC, EVERY)

TEACHER_EMBEDDING = "teacher_embedding"
ONLINE_TEACHER = "online_teacher"
CLASS_PROMPTS = "class_prompts"
CLASS_ROWS = "class_rows"
ANCHORS = "anchors"
FISHER = "fisher"
INPUTS = (TEACHER_EMBEDDING, ONLINE_TEACHER, CLASS_PROMPTS, CLASS_ROWS, ANCHORS, FISHER)


@dataclass
class Batch:
    """What the terms of one step see: its domain, the student's (and teacher's) L2-normalised
    float32 embeddings of its images (None on a generic step that needs no images), the generic
    images' class-prompt rows, and the unweighted values of the terms already computed on it."""
    domain: str
    emb: Any = None
    teacher_emb: Any = None
    class_rows: Any = None
    values: dict[str, Any] = field(default_factory=dict)


# Loss functions: (tuner, batch) -> scalar tensor. `tuner` is the `training.FineTuner`; the functions
# read only its cfg, params(), anchors, fisher, awc_fisher, prototypes and logit_scale.

def _distill(tuner: Any, batch: Batch) -> Any:
    from pipeline.lib import losses
    return losses.embedding_distillation_loss(batch.emb, batch.teacher_emb)


def _gram(tuner: Any, batch: Batch) -> Any:
    from pipeline.lib import losses
    return losses.gram_distillation_loss(batch.emb, batch.teacher_emb)


def _zero_shot_kl(tuner: Any, batch: Batch) -> Any:
    """KL(teacher ‖ student) of the zero-shot logits over the generic class prompts, temperature τ."""
    from pipeline.lib import losses
    tau = tuner.cfg.lwf_temperature
    return losses.logit_distillation_loss(losses.zero_shot_logits(batch.emb, tuner.prototypes, tuner.logit_scale),
                                          losses.zero_shot_logits(batch.teacher_emb, tuner.prototypes,
                                                                  tuner.logit_scale), tau, tau)


def _gift(tuner: Any, batch: Batch) -> Any:
    """GIFT with a frozen text tower: L_cd (T) + gift_ita_weight·L_ita (label smoothing) against each
    generic image's class prompt."""
    from pipeline.lib import losses
    cfg, text = tuner.cfg, tuner.prototypes[batch.class_rows]
    cd = losses.gift_contrastive_distillation(batch.emb, batch.teacher_emb, text, tuner.logit_scale,
                                              cfg.gift_temperature)
    ita = losses.gift_alignment_loss(batch.emb, text, batch.class_rows, tuner.logit_scale,
                                     cfg.gift_label_smoothing)
    return cd + cfg.gift_ita_weight * ita


def _weights(tuner: Any, batch: Batch) -> Any:
    from pipeline.lib import losses
    return losses.weight_regularizer(tuner.params(), tuner.anchors)


def _ewc(tuner: Any, batch: Batch) -> Any:
    from pipeline.lib import losses
    return losses.fisher_penalty(tuner.params(), tuner.anchors, tuner.fisher)


def _awc(tuner: Any, batch: Batch) -> Any:
    """GIFT's adaptive weight consolidation. On a generic batch the Fisher is refreshed from this
    batch's GIFT loss (as GIFT does every iteration); a target batch uses the latest one (GIFT applies
    the penalty in the same iteration as the target loss). Zero before the first generic batch,
    where θ = θ0 anyway."""
    import torch

    from pipeline.lib import losses
    params = tuner.params()
    if batch.domain == GENERIC:
        tuner.awc_fisher = losses.gift_fisher(batch.values["lambda_gift"], params)
    if tuner.awc_fisher is None:
        return torch.zeros((), device=params[0].device)
    return losses.fisher_penalty(params, tuner.anchors, tuner.awc_fisher)


@dataclass(frozen=True)
class Term:
    key: str                      # its λ field of FinetuneCfg
    log: str                      # name in the training logs / curves
    batches: str                  # target | generic | every
    inputs: frozenset[str]
    loss: Callable[[Any, Batch], Any]
    what: str                     # one line: the formula, for docs and messages
    uses_generic_labels: bool = False   # reads the generic images' labels while fine-tuning
    uses_class_prompts: bool = False    # reads text (class-prompt embeddings) while fine-tuning
    requires: tuple[str, ...] = ()      # other λ keys that must be > 0 with it


# Order matters only where a term reads another's value on the same batch (AWC reads GIFT's).
TERMS: tuple[Term, ...] = (
    Term("lambda_distill", "loss_distill", GENERIC, frozenset({TEACHER_EMBEDDING}), _distill,
         "embedding distillation mean‖f_θ − f_0‖²/D on generic images (the paper)"),
    Term("lambda_gram", "loss_gram", GENERIC, frozenset({TEACHER_EMBEDDING}), _gram,
         "batch Gram-matrix (similarity structure) distillation on generic images"),
    Term("lambda_replay_logits", "loss_replay_logits", GENERIC, frozenset({TEACHER_EMBEDDING, CLASS_PROMPTS}),
         _zero_shot_kl, "KL of teacher/student zero-shot logits over the generic class prompts, on generic "
         "(replayed) images", uses_class_prompts=True),
    Term("lambda_gift", "loss_gift", GENERIC, frozenset({TEACHER_EMBEDDING, CLASS_PROMPTS, CLASS_ROWS}), _gift,
         "GIFT: image-text similarity distillation + label-smoothed alignment to each image's class prompt",
         uses_generic_labels=True, uses_class_prompts=True),
    Term("lambda_lwf", "loss_lwf", TARGET, frozenset({ONLINE_TEACHER, CLASS_PROMPTS}), _zero_shot_kl,
         "LwF: KL of θ0's and θ's zero-shot logits over the generic class prompts on the TARGET images",
         uses_class_prompts=True),
    Term("lambda_weights", "reg_weights", EVERY, frozenset({ANCHORS}), _weights,
         "R_w = Σ_tensors mean((θ − θ0)²) (the paper's reference form)"),
    Term("lambda_ewc", "reg_ewc", EVERY, frozenset({ANCHORS, FISHER, CLASS_PROMPTS, CLASS_ROWS}), _ewc,
         "EWC: Σ_j F_j (θ_j − θ0_j)², F the empirical diagonal Fisher of θ0's zero-shot log-likelihood",
         uses_generic_labels=True, uses_class_prompts=True),
    Term("lambda_awc", "reg_awc", EVERY, frozenset({ANCHORS, CLASS_PROMPTS, CLASS_ROWS}), _awc,
         "GIFT's AWC: Σ_j F̂_j (θ_j − θ0_j)², F̂ = (∇L_gift)² normalised to mean 1 per tensor",
         uses_generic_labels=True, uses_class_prompts=True, requires=("lambda_gift",)),
)
BY_KEY: dict[str, Term] = {t.key: t for t in TERMS}


def active(cfg: Any) -> list[Term]:
    """The terms a recipe switches on (λ > 0), in registry order."""
    return [t for t in TERMS if getattr(cfg, t.key) > 0]


def terms_on(cfg: Any, domain: str) -> list[Term]:
    """The active terms a batch of `domain` ('target' | 'generic') computes: its own and the every-batch ones."""
    if domain not in (TARGET, GENERIC):
        raise ValueError(f"unknown batch domain '{domain}' (target | generic)")
    return [t for t in active(cfg) if t.batches in (domain, EVERY)]


def draws_generic_batches(cfg: Any) -> bool:
    """Generic images are drawn (and embedded) only when a generic-batch term uses them."""
    return cfg.schedule == "round_robin" and any(t.batches == GENERIC for t in active(cfg))


def inputs(cfg: Any) -> set[str]:
    """Everything the active terms need (see the module docstring)."""
    needed: set[str] = set()
    for t in active(cfg):
        needed |= t.inputs
    return needed


def needs_online_teacher(cfg: Any) -> bool:
    """A frozen θ0 copy must run on the batches: a term reads it, or the teacher targets are online."""
    needed = inputs(cfg)
    return ONLINE_TEACHER in needed or (TEACHER_EMBEDDING in needed and cfg.teacher_targets == "online")


def needs_precomputed_targets(cfg: Any) -> bool:
    """The `features` stage's teacher embeddings of the generic train split are read."""
    return TEACHER_EMBEDDING in inputs(cfg) and cfg.teacher_targets == "precomputed" and draws_generic_batches(cfg)


def uses_generic_labels_or_prompts(cfg: Any) -> list[str]:
    """Why a recipe uses generic-domain labels and/or class prompts (text) while fine-tuning; [] if it
    does not. The paper's method uses neither, so a comparison marks the methods that do."""
    reasons = []
    for t in active(cfg):
        used = [what for what, on in (("generic labels", t.uses_generic_labels),
                                      ("class prompts", t.uses_class_prompts)) if on]
        if used:
            reasons.append(f"{t.key}: {' and '.join(used)} ({t.what})")
    return reasons


def problems(cfg: Any) -> list[tuple[str, str]]:
    """(key, message) for every way the recipe's λ keys are inconsistent; [] when it is fine."""
    out = []
    for t in TERMS:
        value = getattr(cfg, t.key)
        if value < 0:
            out.append((t.key, f"must be >= 0, got {value}"))
            continue
        if value == 0:
            continue
        for other in t.requires:
            if getattr(cfg, other) <= 0:
                out.append((t.key, f"{t.what.split(':')[0]} needs {other} > 0"))
        if ANCHORS in t.inputs and cfg.lora_rank > 0:
            out.append((t.key, "LoRA keeps θ0 frozen, so a pull to θ0 has nothing to pull: set it to 0 "
                               "(or lora_rank to 0)"))
        if t.batches == GENERIC and cfg.schedule != "round_robin":
            out.append((t.key, f"runs on generic batches, which schedule '{cfg.schedule}' never draws: "
                               "use schedule: round_robin"))
    return out
