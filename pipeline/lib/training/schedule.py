"""The domain of every optimisation step, and the points where a run is validated."""
from __future__ import annotations

from typing import Any

TARGET_STEPS = ("target", "joint")  # the step kinds that take a target batch


def step_plan(cfg: Any) -> list[str]:
    """The kind of every optimizer step. `joint`: one step per target batch (with the replay batch of
    that step when the recipe reads one), so every method of a suite takes `steps` optimizer steps.
    `round_robin` (the reference's): [target, generic] × steps, 2 × steps optimizer steps for every
    method; a generic step without a loss is still an AdamW step (on zero gradients)."""
    if cfg.kind == "pretrained":
        return []
    if cfg.schedule == "round_robin":
        return ["target", "generic"] * cfg.steps
    return ["joint"] * cfg.steps


def target_batches(plan: list[str]) -> int:
    return sum(kind in TARGET_STEPS for kind in plan)


def validation_points(target_steps: int, validations: int) -> list[int]:
    """Target-step counts after which the model is validated: after the first update (as the
    reference), then `validations − 1` points evenly spread, the last at the last target step.
    Never 0: the untouched weights θ0 are never a candidate of a fine-tuning run."""
    if target_steps < 1:
        return []
    spread = {-(-i * target_steps // (validations - 1)) for i in range(1, validations)}  # ceil, ends at target_steps
    return sorted({1} | spread)
