"""Checkpoint selection: the validation criterion and the best validated checkpoint so far."""
from __future__ import annotations

from typing import Any, Callable

import torch


def criterion(scores: dict[str, float], select_on: str) -> float:
    """'all' = mean of target-val and generic-val mAP@k (the paper's choice), 'in-domain' = target only."""
    if select_on == "in-domain":
        return scores["target"]
    return (scores["target"] + scores["generic"]) / 2


class Selection:
    """The best validated checkpoint so far under `select_on` ('last': the last one), and the history.

    Candidates come only from validations after at least one update (`target_steps >= 1`)."""

    def __init__(self, select_on: str, best: dict[str, Any] | None = None, history: list | None = None):
        self.select_on, self.best, self.history = select_on, best, history if history is not None else []

    def consider(self, step: int, target_steps: int, scores: dict[str, float], logs: dict[str, float],
                 weights: Callable[[], dict[str, torch.Tensor]]) -> None:
        if target_steps < 1:
            raise ValueError("the untouched weights are never a checkpoint candidate (validate after an update)")
        self._record(step, target_steps, scores, logs, weights)

    def pretrained(self, scores: dict[str, float], weights: Callable[[], dict[str, torch.Tensor]]) -> None:
        """The `pretrained` method: θ0 is the method itself, its one checkpoint (step 0)."""
        self._record(0, 0, scores, {}, weights)

    def _record(self, step: int, target_steps: int, scores: dict[str, float], logs: dict[str, float],
                weights: Callable[[], dict[str, torch.Tensor]]) -> None:
        crit = criterion(scores, self.select_on)
        self.history.append({"step": step, "target_steps": target_steps, "val_target_map": scores["target"],
                             "val_generic_map": scores["generic"], "criterion": crit, **logs})
        if self.select_on == "last" or self.best is None or crit > self.best["criterion"]:
            self.best = {"step": step, "target_steps": target_steps, "criterion": crit, **scores,
                         "weights": weights()}
