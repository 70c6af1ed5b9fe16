"""The domain of every optimisation step, and the points where a run is validated."""
from __future__ import annotations

from typing import Any


def step_plan(cfg: Any) -> list[str]:
    """The domain of every optimisation step: the reference's round-robin [target, generic, ...], or
    target only. Round-robin alternates even when no generic-batch loss exists: the generic steps then
    apply the every-batch regularisers (R_w, EWC), as many times as the reference does."""
    if cfg.kind == "pretrained":
        return []
    if cfg.schedule == "round_robin":
        return ["target", "generic"] * cfg.steps
    return ["target"] * cfg.steps


def validation_points(target_steps: int, validations: int) -> list[int]:
    """Target-step counts after which the model is validated: after the first update (as the
    reference), then `validations − 1` points evenly spread, the last at the last target step.
    Never 0: the untouched weights θ0 are never a candidate of a fine-tuning run."""
    if target_steps < 1:
        return []
    spread = {-(-i * target_steps // (validations - 1)) for i in range(1, validations)}  # ceil, ends at target_steps
    return sorted({1} | spread)
