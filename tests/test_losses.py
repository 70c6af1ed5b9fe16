"""Every loss against its formula on small tensors (METHOD §3, §4, §11)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.lib import losses

torch.manual_seed(0)


def unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def test_normface_is_cross_entropy_on_scaled_cosines() -> None:
    cos, y = torch.rand(6, 5) * 2 - 1, torch.tensor([0, 1, 2, 3, 4, 0])
    manual = -sum(torch.log_softmax(16 * cos[i], 0)[y[i]] for i in range(6)) / 6
    assert losses.margin_softmax_loss(cos, y, scale=16) == pytest.approx(manual.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margins_reduce_to_normface_at_zero_and_change_only_the_target(kind: str) -> None:
    cos, y = torch.rand(4, 3) * 1.8 - 0.9, torch.tensor([0, 2, 1, 1])
    base = losses.margin_softmax_loss(cos, y, kind="normface")
    assert losses.margin_softmax_loss(cos, y, kind=kind, margin=0.0) == pytest.approx(base.item(), rel=1e-5)
    m = 0.3
    target = cos[torch.arange(4), y]
    adjusted = torch.cos(torch.acos(target) + m) if kind == "arcface" else target - m
    logits = cos.clone()
    logits[torch.arange(4), y] = adjusted
    manual = F.cross_entropy(16 * logits, y)
    assert losses.margin_softmax_loss(cos, y, kind=kind, margin=m) == pytest.approx(manual.item(), rel=1e-5)
    with pytest.raises(ValueError, match="sphereface"):
        losses.margin_softmax_loss(cos, y, kind="sphereface")


def test_cosine_classifier_outputs_cosines() -> None:
    clf = losses.CosineClassifier(8, 3)
    x = torch.randn(5, 8)
    manual = torch.stack([torch.stack([F.cosine_similarity(x[i], clf.weight[c], 0) for c in range(3)])
                          for i in range(5)])
    torch.testing.assert_close(clf(x), manual, rtol=1e-5, atol=1e-6)


def test_distillation_is_two_minus_two_cos_over_d() -> None:
    s, t = unit(4, 16), unit(4, 16)
    expected = ((2 - 2 * (s * t).sum(1)) / 16).mean()
    assert losses.embedding_distillation_loss(s, t) == pytest.approx(expected.item(), rel=1e-5)
    assert losses.embedding_distillation_loss(s, s) == 0


def test_weight_regularizer_is_a_sum_of_per_tensor_means() -> None:
    a0, b0 = torch.zeros(2, 2), torch.zeros(10)
    a, b = torch.full((2, 2), 1.0), torch.full((10,), 2.0)
    # Σ_tensors mean((θ−θ0)²) = mean(1) + mean(4) = 5, while a global mean would be (4·1+10·4)/14
    assert losses.weight_regularizer([a, b], [a0, b0]) == pytest.approx(5.0)
    assert losses.weight_regularizer([a, b], [a0, b0]) != pytest.approx((4 + 40) / 14)
    assert losses.weight_regularizer([a, b], [a.clone(), b.clone()]) == 0


def test_ewc_with_uniform_fisher_is_the_weight_regularizer_up_to_scale() -> None:
    params, anchors = [torch.randn(3, 3), torch.randn(5)], [torch.randn(3, 3), torch.randn(5)]
    fisher = [torch.full((3, 3), 2.5), torch.full((5,), 2.5)]
    assert losses.weight_regularizer(params, anchors, fisher) == pytest.approx(
        2.5 * losses.weight_regularizer(params, anchors).item(), rel=1e-6)


def test_fisher_is_mean_squared_gradient_and_normalisation_is_per_tensor() -> None:
    grads = [[torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 0.0])]]
    (f,) = losses.fisher_diagonal(grads)
    torch.testing.assert_close(f, torch.tensor([5.0, 2.0]))
    (n,) = losses.normalize_per_tensor([f])
    assert n.mean().item() == pytest.approx(1.0)


def test_logit_distillation_is_kl_and_zero_when_equal() -> None:
    zs, zt = torch.randn(4, 6), torch.randn(4, 6)
    p_t, p_s = torch.softmax(zt / 2, -1), torch.softmax(zs / 1, -1)
    manual = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    assert losses.logit_distillation_loss(zs, zt, 1.0, 2.0) == pytest.approx(manual.item(), rel=1e-5)
    assert losses.logit_distillation_loss(zt, zt) == pytest.approx(0.0, abs=1e-7)


def test_gram_distillation() -> None:
    s, t = unit(5, 8), unit(5, 8)
    manual = sum((s[i] @ s[j] - t[i] @ t[j]) ** 2 for i in range(5) for j in range(5)) / 25
    assert losses.gram_distillation_loss(s, t) == pytest.approx(manual.item(), rel=1e-5)
    assert losses.gram_distillation_loss(t, t) == pytest.approx(0.0, abs=1e-7)
    perm = torch.randperm(5)
    assert losses.gram_distillation_loss(s[perm], t[perm]) == pytest.approx(
        losses.gram_distillation_loss(s, t).item(), rel=1e-5)


def test_gift_contrastive_distillation_is_zero_at_the_teacher_and_positive_elsewhere() -> None:
    img, text = unit(6, 8), unit(6, 8)
    assert losses.gift_contrastive_distillation(img, img, text, 10.0) == pytest.approx(0.0, abs=1e-5)
    other = unit(6, 8)
    value = losses.gift_contrastive_distillation(other, img, text, 10.0, temperature=2.0)
    zs, zt = 10 * other @ text.T, 10 * img @ text.T
    kl = lambda a, b: (torch.softmax(b / 2, -1) * (torch.log_softmax(b / 2, -1) - torch.log_softmax(a / 2, -1))).sum(-1).mean()  # noqa: E731
    assert value.item() > 0 and value == pytest.approx((4 * (kl(zs, zt) + kl(zs.T, zt.T))).item(), rel=1e-5)


def test_gift_alignment_shares_target_mass_within_a_class() -> None:
    img, text = unit(4, 8), unit(4, 8)
    classes = torch.tensor([0, 0, 1, 2])
    z = 5 * img @ text.T
    y = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    manual = -(y * torch.log_softmax(z, -1)).sum(-1).mean() - (y * torch.log_softmax(z.T, -1)).sum(-1).mean()
    assert losses.gift_alignment_loss(img, text, classes, 5.0) == pytest.approx(manual.item(), rel=1e-5)


def test_losses_backpropagate_and_run_under_bf16_autocast() -> None:
    x = torch.randn(4, 8, requires_grad=True)
    clf = losses.CosineClassifier(8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = F.normalize(x @ torch.eye(8), dim=-1)
        loss = losses.margin_softmax_loss(clf(emb), torch.tensor([0, 1, 2, 0])) + \
            losses.embedding_distillation_loss(emb, unit(4, 8))
    loss.backward()
    assert torch.isfinite(x.grad).all() and math.isfinite(loss.item())
