"""Recipes: what a fine-tuning run and the few-shot adapters are told to do (torch-free declarations).

`FinetuneCfg` is the shared fine-tuning recipe (params.yaml `finetune`); a method is that recipe
with its own entries of `methods.<name>` on top (`merge_recipe`). `FewShotSettings` are the adapter
family's hyper-parameters; `FEWSHOT_METHODS` declares the adapters, each named by the dotted path of
its class (`pipeline.lib.fewshot`), so listing and validating them loads no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass
class FinetuneCfg:
    """Shared fine-tuning recipe; `methods.<name>` overrides any of these keys."""
    kind: str = "finetune"        # finetune | pretrained (no training: the teacher itself)
    seed: int = 0                 # classifier init, batch order, augmentations (teacher keeps `seed`)
    steps: int = 300              # target batches, one per round (the same for every method of a suite)
    batch_size: int = 128
    lr_backbone: float = 1e-4
    head_lr_ratio: float = 100.0  # classifier LR = ratio × lr_backbone (the reference: 1e-3 / 1e-5)
    weight_decay: float = 1e-6
    train_resize: int = 36        # train view: resize to this square, random crop image_size, flip
    hflip: bool = False
    classifier: str = "normface"  # normface | arcface | cosface
    scale: float = 16.0
    margin: float = 0.0
    # retention terms: one λ per entry of pipeline.lib.retention.TERMS (a test keeps the two lists equal)
    lambda_distill: float = 0.0   # λ_d on generic batches: embedding distillation (the paper)
    lambda_weights: float = 0.0   # λ_w on every batch: R_w, uniform pull to θ0 (the paper)
    lambda_lwf: float = 0.0       # target batches: KL of θ0's / θ's zero-shot logits over the generic class prompts (LwF)
    lambda_replay_logits: float = 0.0  # generic batches: the same KL on generic (replayed) images
    lwf_temperature: float = 2.0  # τ of both teacher and student softmax (LwF, replay logits)
    lambda_gram: float = 0.0      # generic batches: batch similarity-structure distillation
    lambda_ewc: float = 0.0       # every batch: Σ F(θ−θ0)², EWC's unnormalised per-sample Fisher from generic data
    fisher_batches: int = 20      # EWC Fisher: over fisher_batches × batch_size generic train images (eval view)
    lambda_gift: float = 0.0      # generic batches: GIFT L_cd + gift_ita_weight·L_ita against the class prompts
    gift_ita_weight: float = 0.25  # GIFT's λ_ita relative to L_cd (GIFT: 0.25)
    gift_temperature: float = 2.0  # GIFT's distillation temperature T (GIFT: 2)
    gift_label_smoothing: float = 0.2  # GIFT's label smoothing of the L_ita targets (GIFT: 0.2)
    lambda_awc: float = 0.0       # every batch: GIFT's AWC Σ F̂(θ−θ0)², F̂ = (∇L_gift)² / per-tensor mean (GIFT: 1)
    # LP-FT: first the head alone on the frozen encoder's features, to convergence, then full fine-tuning
    lp_max_steps: int = 0         # > 0: LP-FT; full-batch probe steps at most
    lp_lr: float = 1e-2           # the probe's AdamW LR (the head alone, on fixed features)
    lp_patience: int = 20         # the probe stops when its loss fell by < lp_tol (relative) over this many steps
    lp_tol: float = 1e-3
    lora_rank: int = 0            # > 0: train LoRA updates of rank r on attention/MLP weights (θ0 frozen)
    lora_alpha: float = 16.0      # LoRA scale α (the update is (α/r)·B·A)
    teacher_targets: str = "precomputed"  # precomputed (eval view, as the reference) | online
    # joint: each optimizer step takes one target batch and, for a recipe with replay-batch terms, one
    # replay batch (losses summed). round_robin: the reference's alternation of single-domain steps,
    # 2 × steps optimizer steps; a replay step with no loss is an AdamW step on zero gradients, which
    # still moves the weights along the moments (the reference's naive baseline under optax).
    schedule: str = "joint"       # joint | round_robin (one for the whole suite)
    validations: int = 20         # validation points: after target step 1, then spread evenly to the last step
    select_on: str = "all"        # all | in-domain | last
    checkpoint_every: int = 50


SUITE_WIDE = ("schedule", "steps", "batch_size", "seed")  # every method of a suite shares these (equal terms)


class RecipeError(ValueError):
    """A method's entry that is not a valid recipe: `key` names the entry."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def merge_recipe(base: FinetuneCfg, overrides: dict[str, Any] | None) -> FinetuneCfg:
    """`base` with `overrides` (a method's entries) on top, type-checked like params.yaml itself."""
    known = {f for f in FinetuneCfg.__dataclass_fields__}
    for key in overrides or {}:
        if key not in known:
            raise RecipeError(key, "unknown key")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(base), overrides or {})
    except OmegaConfBaseException as err:
        raise RecipeError(str(err.full_key), err.msg.splitlines()[0]) from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


@dataclass
class FewShotSettings:
    """Hyper-parameters of the few-shot adapters (`fewshot.settings` overrides them; pipeline.lib.fewshot)."""
    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    logit_scale: Optional[float] = None  # None: the model's own (the teacher spec's `logit_scale`)
    tip_search_scale: list[float] = field(default_factory=lambda: [7.0, 3.0])  # Tip-Adapter: β_max, α_max
    tip_search_steps: list[int] = field(default_factory=lambda: [200, 20])    # Tip-Adapter: grid points of β, α
    attributes: int = 8           # LatHAdapter: shared attribute vectors
    curvature: float = 1.0        # LatHAdapter: the ball has curvature −c
    temperature: float = 0.1      # LatHAdapter: τ of −d/τ logits
    hierarchy_weight: float = 0.1  # LatHAdapter: λ of the hierarchy terms
    geometry: str = "hyperbolic"  # LatHAdapter: hyperbolic | cosine
    seed: int = 0


@dataclass(frozen=True)
class FewShotMethod:
    name: str
    target: str                   # dotted name of its class (fit / predict: pipeline.lib.fewshot)
    label: str = ""               # how the report names it (default: the name)
    novel: bool = True            # classifies classes it was not fitted on (through their text)

    @property
    def title(self) -> str:
        return self.label or self.name


_FS = "pipeline.lib.fewshot"
FEWSHOT_METHODS: dict[str, FewShotMethod] = {m.name: m for m in (
    FewShotMethod("zero_shot", f"{_FS}.ZeroShot"),
    FewShotMethod("linear_probe", f"{_FS}.LinearProbe", novel=False),
    FewShotMethod("clip_adapter", f"{_FS}.ClipAdapter"),
    FewShotMethod("tip_adapter", f"{_FS}.TipAdapter"),
    # built from the LatHAdapter abstract alone (its equations were not available): "LatHAdapter-style"
    FewShotMethod("lathadapter", f"{_FS}.LatHAdapter", label="LatHAdapter-style"),
)}


def register_fewshot(method: FewShotMethod) -> None:
    """Add (or replace) a few-shot method: validation, the stage and the report then know it."""
    FEWSHOT_METHODS[method.name] = method
