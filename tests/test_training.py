"""The fine-tuning step on a real (tiny) open_clip vision tower: R_w ignores the head and is zero
at θ0, the step plan follows the schedule, and a step is deterministic given (seed, step)."""
from __future__ import annotations

import copy

import pytest
import torch
from open_clip.transformer import VisionTransformer

from pipeline.config import FinetuneCfg
from pipeline.lib import losses
from pipeline.lib.models import vision_params
from pipeline.lib.training import FineTuner, estimate_fisher, interpolate_weights, step_plan, zero_shot_logits


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
    assert t.regularizers()[1]["reg_weights"] == 0.0
    with torch.no_grad():
        t.classifier.weight.add_(1.0)
    assert t.regularizers()[1]["reg_weights"] == 0.0
    with torch.no_grad():
        next(t.visual.parameters()).add_(0.1)
    assert t.regularizers()[1]["reg_weights"] > 0


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
    (FinetuneCfg(steps=1, lambda_lwf=1.0), ["target", "generic"]),
    (FinetuneCfg(steps=1, lambda_gram=1.0), ["target", "generic"]),
    (FinetuneCfg(steps=1, lambda_ewc=1.0), ["target"]),  # EWC needs no generic batches while training
    (FinetuneCfg(steps=2, lp_steps=2), ["probe", "probe", "target", "target"]),
])
def test_step_plan(cfg: FinetuneCfg, expected: list[str]) -> None:
    assert step_plan(cfg) == expected


def test_online_teacher_targets_the_same_augmented_view() -> None:
    t = FineTuner(tower(), 5, 24, FinetuneCfg(lambda_distill=1.0, teacher_targets="online", train_resize=18),
                  (0.5,) * 3, (0.5,) * 3, 16, torch.device("cpu"), teacher_visual=tower())
    # student == teacher at the start: the online distillation loss is exactly zero
    assert t.generic_step(batch(), None, step=0)["loss_distill"] == pytest.approx(0.0, abs=1e-12)


PROTOS = torch.nn.functional.normalize(torch.randn(6, 24, generator=torch.Generator().manual_seed(2)), dim=-1)


def fisher_of(visual: torch.nn.Module) -> list[torch.Tensor]:
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    return estimate_fisher(visual, [(x, torch.tensor([0, 1, 2, 3]))], PROTOS, scale=10.0)


def test_lwf_and_gram_are_zero_for_the_teacher_itself_and_positive_once_it_moved() -> None:
    t = FineTuner(tower(), 5, 24, FinetuneCfg(lambda_lwf=1.0, lambda_gram=1.0, teacher_targets="online", lr_backbone=1e-2,
                                              train_resize=18), (0.5,) * 3, (0.5,) * 3, 16, torch.device("cpu"),
                  teacher_visual=tower(), prototypes=PROTOS, logit_scale=10.0)
    logs = t.generic_step(batch(), None, step=0)
    assert logs["loss_lwf"] == pytest.approx(0.0, abs=1e-6) and logs["loss_gram"] == pytest.approx(0.0, abs=1e-10)
    assert "loss_distill" not in logs  # λ_d = 0: not computed
    for step in range(1, 4):
        t.target_step(batch(), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]), step)
    logs = t.generic_step(batch(), None, step=9)
    assert logs["loss_lwf"] > 1e-4 and logs["loss_gram"] > 1e-6


def test_lwf_term_is_the_kl_of_zero_shot_logits() -> None:
    s, te = (torch.nn.functional.normalize(torch.randn(5, 24, generator=torch.Generator().manual_seed(i)), dim=-1)
             for i in (4, 5))
    zs, zt = zero_shot_logits(s, PROTOS, 10.0), zero_shot_logits(te, PROTOS, 10.0)
    p, q = torch.softmax(zt / 2, -1), torch.softmax(zs / 2, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert losses.logit_distillation_loss(zs, zt, 2.0, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_fisher_is_normalised_per_tensor_and_ewc_with_uniform_fisher_is_rw() -> None:
    visual = tower()
    fisher = fisher_of(visual)
    params = vision_params(visual)
    assert len(fisher) == len(params)
    for f, p in zip(fisher, params):
        assert f.shape == p.shape and (f >= 0).all()
        assert f.mean().item() == pytest.approx(1.0, rel=1e-4) or f.abs().sum() == 0
    assert all(p.grad is None for p in params)  # estimating leaves no gradients behind
    anchors = [p.detach().clone() + 0.01 * torch.randn_like(p) for p in params]
    uniform = [torch.ones_like(p) for p in params]
    assert losses.weight_regularizer(params, anchors, uniform).item() == pytest.approx(
        losses.weight_regularizer(params, anchors).item(), rel=1e-6)


def test_ewc_term_is_zero_at_theta0_and_weights_by_the_fisher() -> None:
    visual = tower()
    fisher = fisher_of(visual)
    t = FineTuner(visual, 5, 24, FinetuneCfg(lambda_ewc=5.0, train_resize=18), (0.5,) * 3, (0.5,) * 3, 16,
                  torch.device("cpu"), prototypes=PROTOS, logit_scale=10.0, fisher=fisher)
    assert t.regularizers()[1] == {"reg_ewc": 0.0}
    with torch.no_grad():
        for p in vision_params(t.visual):
            p.add_(0.01)
    expected = sum((f * 1e-4).mean() for f in fisher)
    assert t.regularizers()[1]["reg_ewc"] == pytest.approx(float(expected), rel=1e-3)
    with pytest.raises(ValueError, match="Fisher"):
        FineTuner(tower(), 5, 24, FinetuneCfg(lambda_ewc=5.0), (0.5,) * 3, (0.5,) * 3, 16, torch.device("cpu"),
                  prototypes=PROTOS)


def test_probe_step_trains_the_head_only() -> None:
    t = tuner(lp_steps=2)
    before = copy.deepcopy(t.visual.state_dict())
    head = t.classifier.weight.detach().clone()
    logs = t.probe_step(batch(), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]), step=0)
    assert logs["loss_probe"] > 0
    assert all(torch.equal(before[k], v) for k, v in t.visual.state_dict().items())
    assert not torch.equal(head, t.classifier.weight)


def test_wise_ft_interpolation_hits_both_endpoints_exactly() -> None:
    theta0, theta_ft = tower().state_dict(), {k: v + 1.0 for k, v in tower().state_dict().items()}
    for alpha, expected in ((0.0, theta0), (1.0, theta_ft)):
        out = interpolate_weights(theta0, theta_ft, alpha)
        assert all(torch.equal(out[k], expected[k]) for k in theta0)
    mid = interpolate_weights(theta0, theta_ft, 0.25)
    assert all(torch.allclose(mid[k], theta0[k] + 0.25) for k in theta0)
    with pytest.raises(ValueError, match="different tensors"):
        interpolate_weights(theta0, {"x": torch.zeros(1)}, 0.5)


def test_lora_starts_at_theta0_trains_only_low_rank_updates_and_merges_exactly() -> None:
    theta0 = tower().state_dict()
    t = tuner(lambda_weights=0.0, lambda_distill=0.0, lora_rank=2, lr_backbone=1e-2)
    assert all(torch.equal(t.vision_weights()[k], theta0[k]) for k in theta0)  # B = 0: exactly θ0
    trainable = sum(p.numel() for p in t.optimizer.param_groups[0]["params"])
    assert trainable < sum(v.numel() for v in theta0.values()) / 4
    for step in range(3):
        t.target_step(batch(), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]), step)
    merged = t.vision_weights()
    assert merged.keys() == theta0.keys()  # original names: later stages load it like any checkpoint
    changed = {k for k in theta0 if not torch.equal(merged[k], theta0[k])}
    assert changed and all(k.endswith(("in_proj_weight", "out_proj.weight", "c_fc.weight", "c_proj.weight"))
                           for k in changed), changed
    plain = tower()
    plain.load_state_dict(merged)
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(plain.eval()(x), t.visual.eval()(x), rtol=1e-4, atol=1e-5)


def test_lora_refuses_a_pull_to_theta0() -> None:
    from pipeline.config import ConfigError, _validate_finetune
    with pytest.raises(ConfigError, match="lora_rank"):
        _validate_finetune(FinetuneCfg(lora_rank=4, lambda_weights=1.0), "methods.lora")


def test_gift_step_distils_similarity_distributions_and_awc_starts_at_zero() -> None:
    cfg = FinetuneCfg(lambda_gift=1.0, lambda_awc=1.0, teacher_targets="online", lr_backbone=1e-2,
                      gift_ita_weight=0.0, train_resize=18)
    t = FineTuner(tower(), 5, 24, cfg, (0.5,) * 3, (0.5,) * 3, 16, torch.device("cpu"), teacher_visual=tower(),
                  prototypes=PROTOS, logit_scale=10.0)
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    logs = t.generic_step(batch(), None, 0, rows)
    # student == teacher: L_cd is a KL, exactly 0 up to float error; AWC is 0 at θ0
    assert logs["loss_gift"] == pytest.approx(0.0, abs=1e-5) and logs["reg_awc"] == 0.0
    for step in range(1, 4):
        t.target_step(batch(), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]), step)
    logs = t.generic_step(batch(), None, 9, rows)
    assert logs["loss_gift"] > 1e-4 and logs["reg_awc"] > 0
    with pytest.raises(AssertionError, match="class rows"):
        t.generic_step(batch(), None, 10, None)
