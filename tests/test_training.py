"""The fine-tuning step on a real (tiny) open_clip vision tower: R_w ignores the head and is zero
at θ0, the step plan follows the schedule, and a step is deterministic given (seed, step)."""
from __future__ import annotations

import copy

import pytest
import torch
from open_clip.transformer import VisionTransformer

from pipeline.config import FinetuneCfg
from pipeline.lib.training import FineTuner, step_plan


def tower() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=16, patch_size=4, width=32, layers=1, heads=2, mlp_ratio=2.0,
                             output_dim=24)


def tuner(**overrides) -> FineTuner:
    cfg = FinetuneCfg(**{"lambda_weights": 10.0, "lambda_distill": 100.0, "train_resize": 18, **overrides})
    return FineTuner(tower(), n_classes=5, embed_dim=24, cfg=cfg, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=16,
                     device=torch.device("cpu"))


def batch(n: int = 8) -> torch.Tensor:
    return torch.randint(0, 255, (n, 3, 18, 18), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_weight_term_is_zero_at_theta0_and_ignores_the_classifier() -> None:
    t = tuner()
    assert t.weight_term().item() == 0.0
    with torch.no_grad():
        t.classifier.weight.add_(1.0)
    assert t.weight_term().item() == 0.0
    with torch.no_grad():
        next(t.visual.parameters()).add_(0.1)
    assert t.weight_term().item() > 0


def test_target_step_moves_the_tower_and_the_generic_step_uses_teacher_targets() -> None:
    t = tuner()
    before = copy.deepcopy(t.visual.state_dict())
    logs = t.target_step(batch(), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]), step=0)
    assert logs["loss_cls"] > 0 and logs["reg_weights"] == 0.0
    assert any(not torch.equal(before[k], v) for k, v in t.visual.state_dict().items())
    targets = torch.nn.functional.normalize(torch.randn(8, 24), dim=-1)
    logs = t.generic_step(batch(), targets, step=1)
    assert logs["loss_distill"] > 0 and logs["reg_weights"] > 0


def test_steps_are_deterministic_given_seed_and_step() -> None:
    a, b = tuner(), tuner()
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    for step in range(3):
        a.target_step(batch(), labels, step)
        b.target_step(batch(), labels, step)
    for (k, va), vb in zip(a.visual.state_dict().items(), b.visual.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("cfg, expected", [
    (FinetuneCfg(steps=2, lambda_distill=1.0), ["target", "generic", "target", "generic"]),
    (FinetuneCfg(steps=2, lambda_distill=0.0), ["target", "target"]),
    (FinetuneCfg(steps=2, lambda_distill=1.0, schedule="target_only"), ["target", "target"]),
    (FinetuneCfg(steps=2, kind="pretrained"), []),
])
def test_step_plan(cfg: FinetuneCfg, expected: list[str]) -> None:
    assert step_plan(cfg) == expected


def test_online_teacher_targets_the_same_augmented_view() -> None:
    t = FineTuner(tower(), 5, 24, FinetuneCfg(lambda_distill=1.0, teacher_targets="online", train_resize=18),
                  (0.5,) * 3, (0.5,) * 3, 16, torch.device("cpu"), teacher_visual=tower())
    # student == teacher at the start: the online distillation loss is exactly zero
    assert t.generic_step(batch(), None, step=0)["loss_distill"] == pytest.approx(0.0, abs=1e-12)
