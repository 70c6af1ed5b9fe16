"""The retention terms: one registry that the step schedule, the validation of params and the
training step all read.

A retention method is a choice of weights λ for these terms (params.yaml `methods.<name>`). Each
entry says which `FinetuneCfg` key weighs it, on which batches it runs, what it needs, and which
function computes it. Adding a method that is a new loss term is one entry here, its λ field in
`FinetuneCfg` and its loss in `pipeline.lib.training.terms` (tests check the three agree).

Batches (`Term.batches`):
  target   the fine-grained batches only (canonical LwF: the old model's logits on the new task's images)
  generic  the replay batches (their images are drawn only when such a term is on): in the joint schedule
           one per step beside the target batch, in the reference's round-robin every other step
  every    once per optimizer step (the weight-space pulls to θ0), whatever the batches of that step

Inputs (`Term.inputs`), read by the `finetune` stage to load only what the active terms need:
  teacher_embedding  the teacher's embedding of each generic image (precomputed eval view, or the frozen
                     teacher on the same augmented view with `teacher_targets: online`)
  online_teacher     a frozen copy of θ0 run on the step's own augmented batch
  class_prompts      frozen-text embeddings of the generic train classes' prompts (`features`)
  class_rows         each generic image's row among those prompts, i.e. its generic LABEL
  anchors            θ0 of the vision tower (weight-space pulls; meaningless under LoRA, where θ0 is frozen)
  fisher             EWC's diagonal Fisher, estimated on labelled generic images before training

This module is declarations only (params validation reads it in every stage); the losses live in
`pipeline.lib.training.terms`, named here by their dotted path and bound by the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class Term:
    key: str                      # its λ field of FinetuneCfg
    log: str                      # name in the training logs / curves
    batches: str                  # target | generic | every
    inputs: frozenset[str]
    loss: str                     # dotted name of its loss (tuner, batch) -> tensor (pipeline.lib.training.terms)
    what: str                     # one line: the formula, for docs and messages
    uses_generic_labels: bool = False   # reads the generic images' labels while fine-tuning
    uses_class_prompts: bool = False    # reads text (class-prompt embeddings) while fine-tuning
    requires: tuple[str, ...] = ()      # other λ keys that must be > 0 with it


_TERMS = "pipeline.lib.training.terms"
# Order matters only where a term reads another's value on the same batch (AWC reads GIFT's).
TERMS: tuple[Term, ...] = (
    Term("lambda_distill", "loss_distill", GENERIC, frozenset({TEACHER_EMBEDDING}), f"{_TERMS}.distill",
         "embedding distillation mean‖f_θ − f_0‖²/D on generic images (the paper)"),
    Term("lambda_gram", "loss_gram", GENERIC, frozenset({TEACHER_EMBEDDING}), f"{_TERMS}.gram",
         "batch Gram-matrix (similarity structure) distillation on generic images"),
    Term("lambda_replay_logits", "loss_replay_logits", GENERIC, frozenset({TEACHER_EMBEDDING, CLASS_PROMPTS}),
         f"{_TERMS}.zero_shot_kl", "KL of teacher/student zero-shot logits over the generic class prompts, on generic "
         "(replayed) images", uses_class_prompts=True),
    Term("lambda_gift", "loss_gift", GENERIC, frozenset({TEACHER_EMBEDDING, CLASS_PROMPTS, CLASS_ROWS}), f"{_TERMS}.gift",
         "GIFT: image-text similarity distillation + label-smoothed alignment to each image's class prompt",
         uses_generic_labels=True, uses_class_prompts=True),
    Term("lambda_lwf", "loss_lwf", TARGET, frozenset({ONLINE_TEACHER, CLASS_PROMPTS}), f"{_TERMS}.zero_shot_kl",
         "LwF: KL of θ0's and θ's zero-shot logits over the generic class prompts on the TARGET images",
         uses_class_prompts=True),
    Term("lambda_weights", "reg_weights", EVERY, frozenset({ANCHORS}), f"{_TERMS}.weights",
         "R_w = Σ_tensors mean((θ − θ0)²) (the paper's reference form)"),
    Term("lambda_ewc", "reg_ewc", EVERY, frozenset({ANCHORS, FISHER, CLASS_PROMPTS, CLASS_ROWS}), f"{_TERMS}.ewc",
         "EWC: Σ_j F_j (θ_j − θ0_j)², F the empirical diagonal Fisher of θ0's zero-shot log-likelihood",
         uses_generic_labels=True, uses_class_prompts=True),
    Term("lambda_awc", "reg_awc", EVERY, frozenset({ANCHORS, CLASS_PROMPTS, CLASS_ROWS}), f"{_TERMS}.awc",
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
    return any(t.batches == GENERIC for t in active(cfg))


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
    return out
