"""Every loss against an independent re-derivation on small tensors (docs/method.md, docs/baselines.md)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.lib import losses


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def ball(n: int, d: int, c: float, r_max: float = 0.9) -> torch.Tensor:
    """n random points of the Poincaré ball with √c‖x‖ < r_max."""
    return unit(n, d) * torch.rand(n, 1) * r_max / math.sqrt(c)


def arcosh_distance(x: torch.Tensor, y: torch.Tensor, c: float) -> float:
    """Independent closed form: d_c = (1/√c)·arcosh(1 + 2c‖x−y‖² / ((1−c‖x‖²)(1−c‖y‖²))), in float64."""
    x, y = x.double(), y.double()
    arg = 1 + 2 * c * (x - y).pow(2).sum() / ((1 - c * x.pow(2).sum()) * (1 - c * y.pow(2).sum()))
    return math.acosh(arg.item()) / math.sqrt(c)


# ----- classification (the method's NormFace head) -----

def test_normface_is_cross_entropy_on_scaled_cosines() -> None:
    cos, y = torch.rand(6, 5) * 2 - 1, torch.tensor([0, 1, 2, 3, 4, 0])
    manual = -sum(math.log(math.exp(16 * cos[i, y[i]]) / sum(math.exp(16 * v) for v in cos[i])) for i in range(6)) / 6
    assert losses.margin_softmax_loss(cos, y) == pytest.approx(manual, rel=1e-5)


def test_label_smoothing_mixes_the_target_with_the_uniform_distribution() -> None:
    cos, y, eps = torch.rand(4, 5) * 2 - 1, torch.tensor([0, 3, 2, 4]), 0.2
    logp = torch.log_softmax(16 * cos, -1)
    manual = sum(-(1 - eps) * logp[i, y[i]] - eps * logp[i].mean() for i in range(4)) / 4
    assert losses.margin_softmax_loss(cos, y, label_smoothing=eps) == pytest.approx(manual.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margins_reduce_to_normface_at_zero_and_change_only_the_target(kind: str) -> None:
    cos, y = torch.rand(4, 3) * 1.8 - 0.9, torch.tensor([0, 2, 1, 1])
    base = losses.margin_softmax_loss(cos, y, kind="normface")
    assert losses.margin_softmax_loss(cos, y, kind=kind, margin=0.0) == pytest.approx(base.item(), rel=1e-5)
    m, logits = 0.3, cos.clone()
    for i in range(4):
        t = cos[i, y[i]].item()  # cos(θ+m) = cos θ cos m − sin θ sin m, with sin θ ≥ 0 on [0, π]
        logits[i, y[i]] = t * math.cos(m) - math.sqrt(1 - t * t) * math.sin(m) if kind == "arcface" else t - m
    manual = F.cross_entropy(16 * logits, y)  # non-target logits are the plain cosines
    assert losses.margin_softmax_loss(cos, y, kind=kind, margin=m) == pytest.approx(manual.item(), rel=1e-5)
    assert losses.margin_softmax_loss(cos, y, kind=kind, margin=m) > base  # a margin makes the target harder


def test_unknown_margin_kind_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="sphereface"):
        losses.margin_softmax_loss(torch.zeros(2, 3), torch.tensor([0, 1]), kind="sphereface")


def test_cosine_classifier_outputs_cosines_and_uses_lecun_uniform_init() -> None:
    clf = losses.CosineClassifier(8, 3)
    assert clf.weight.shape == (3, 8) and clf.weight.abs().max() <= math.sqrt(3 / 8)
    assert not any("bias" in name for name, _ in clf.named_parameters())
    x, w = torch.randn(5, 8), clf.weight.detach()
    manual = torch.tensor([[float(x[i] @ w[c] / (x[i].norm() * w[c].norm())) for c in range(3)]
                           for i in range(5)])
    torch.testing.assert_close(clf(x), manual, rtol=1e-5, atol=1e-6)


# ----- embedding distillation -----

def test_distillation_is_two_minus_two_cos_over_d_and_does_not_renormalise() -> None:
    s, t = unit(4, 16), unit(4, 16)
    expected = sum((2 - 2 * float(s[i] @ t[i])) / 16 for i in range(4)) / 4
    assert losses.embedding_distillation_loss(s, t) == pytest.approx(expected, rel=1e-5)
    assert losses.embedding_distillation_loss(s, s) == 0
    # 2t vs t: ‖t‖²/D = 1/D; re-normalising the student would give 0
    assert losses.embedding_distillation_loss(2 * t, t) == pytest.approx(1 / 16, rel=1e-5)


# ----- weight-space regularisers (R_w, EWC, GIFT's AWC) -----

def test_weight_regularizer_is_a_sum_of_per_tensor_means() -> None:  # the paper's R_w
    params, anchors = [torch.randn(2, 3), torch.randn(10)], [torch.randn(2, 3), torch.randn(10)]
    per_tensor = [sum((p.flatten()[j] - a.flatten()[j]).item() ** 2 for j in range(p.numel())) / p.numel()
                  for p, a in zip(params, anchors)]
    value = losses.weight_regularizer(params, anchors)
    assert value == pytest.approx(sum(per_tensor), rel=1e-5)
    global_mean = sum(per_tensor[k] * params[k].numel() for k in range(2)) / 16
    assert value != pytest.approx(global_mean, rel=1e-3)
    # hand numbers: mean(1²) over 4 + mean(2²) over 10 = 5, while the global mean is 44/14
    assert losses.weight_regularizer([torch.ones(2, 2), torch.full((10,), 2.0)],
                                     [torch.zeros(2, 2), torch.zeros(10)]) == pytest.approx(5.0)


def test_weight_regularizer_is_zero_at_the_anchor_with_per_tensor_mean_gradient() -> None:
    p = [torch.randn(3, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    assert losses.weight_regularizer(p, [q.detach().clone() for q in p]) == 0
    anchors = [torch.zeros(3, 3), torch.zeros(5)]
    losses.weight_regularizer(p, anchors).backward()
    for q in p:  # ∂/∂θ mean((θ−θ0)²) = 2(θ−θ0)/n_ℓ
        torch.testing.assert_close(q.grad, 2 * q.detach() / q.numel())


def test_fisher_penalty_is_an_element_sum_weighted_by_a_hand_fisher() -> None:
    # EWC / GIFT's ewc_loss: Σ_j F_j (θ_j − θ0_j)² over every element of every tensor, no per-tensor mean
    params = [torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([3.0, 0.0, 1.0])]
    anchors = [torch.zeros(2, 2), torch.tensor([1.0, 0.0, 0.0])]
    fisher = [torch.tensor([[0.5, 1.0], [7.0, 2.0]]), torch.tensor([0.25, 9.0, 4.0])]
    # 0.5·1 + 1·4 + 7·0 + 2·1 = 6.5;  0.25·4 + 9·0 + 4·1 = 5  →  11.5
    assert losses.fisher_penalty(params, anchors, fisher).item() == pytest.approx(11.5)
    p = [q.clone().requires_grad_() for q in params]
    losses.fisher_penalty(p, anchors, fisher).backward()
    for q, a, f in zip(p, anchors, fisher):  # ∂/∂θ = 2 F (θ − θ0), the same scale in every tensor
        torch.testing.assert_close(q.grad, 2 * f * (q.detach() - a))


def test_fisher_is_the_mean_of_per_sample_squared_gradients() -> None:
    grads = [[torch.tensor([1.0, 2.0]), torch.tensor([[4.0]])], [torch.tensor([3.0, 0.0]), torch.tensor([[0.0]])]]
    f1, f2 = losses.mean_squared_gradients(grads)
    torch.testing.assert_close(f1, torch.tensor([5.0, 2.0]))  # (1+9)/2, (4+0)/2: unnormalised
    torch.testing.assert_close(f2, torch.tensor([[8.0]]))
    with pytest.raises(ValueError):
        losses.mean_squared_gradients([])


def test_gift_fisher_is_the_squared_gradient_normalised_to_mean_one_per_tensor() -> None:
    # L = Σ c·w + Σ d·v (linear): ∇_w L = c, ∇_v L = d; an unused tensor u gets GIFT's 1e-6
    w, v, u = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    c, d = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0, 4.0])
    fw, fv, fu = losses.gift_fisher((c * w).sum() + (d * v).sum(), [w, v, u])
    torch.testing.assert_close(fw, torch.tensor([1.0, 9.0]) / 5.0)          # mean(1, 9) = 5
    torch.testing.assert_close(fv, torch.tensor([4.0, 0.0, 16.0]) / (20 / 3))  # mean(4, 0, 16) = 20/3
    torch.testing.assert_close(fu, torch.full((2,), 1e-6))
    # GIFT's AWC penalty on top of it: Σ F̂ (θ − θ0)² with θ0 = 0, θ = 1 → Σ F̂ = 2 + 3 + 2e-6
    zeros = [torch.zeros(2), torch.zeros(3), torch.zeros(2)]
    assert losses.fisher_penalty([w, v, u], zeros, [fw, fv, fu]).item() == pytest.approx(5.0 + 2e-6, rel=1e-6)


# ----- other distillations (LwF, Gram) -----

def test_logit_distillation_is_kl_and_zero_when_equal() -> None:
    zs, zt = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    manual = 0.0
    for i in range(4):
        p_t = [math.exp(v / 2) for v in zt[i].tolist()]
        p_s = [math.exp(v / 1) for v in zs[i].tolist()]
        p_t, p_s = [v / sum(p_t) for v in p_t], [v / sum(p_s) for v in p_s]
        manual += sum(a * math.log(a / b) for a, b in zip(p_t, p_s)) / 4
    value = losses.logit_distillation_loss(zs, zt, t_student=1.0, t_teacher=2.0)
    assert value.item() == pytest.approx(manual, rel=1e-5)
    value.backward()
    assert zt.grad is None and zs.grad is not None  # teacher is stop-grad
    assert losses.logit_distillation_loss(zt, zt).item() == pytest.approx(0.0, abs=1e-7)


def test_gram_distillation_matches_loops_is_zero_when_equal_and_permutation_consistent() -> None:
    s, t0 = unit(5, 8), unit(5, 8)
    t = t0.clone().requires_grad_()
    manual = sum((float(s[i] @ s[j]) - float(t0[i] @ t0[j])) ** 2 for i in range(5) for j in range(5)) / 25
    assert losses.gram_distillation_loss(s, t) == pytest.approx(manual, rel=1e-5)
    assert losses.gram_distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)
    perm = torch.randperm(5)
    assert losses.gram_distillation_loss(s[perm], t[perm]) == pytest.approx(
        losses.gram_distillation_loss(s, t).item(), rel=1e-5)
    assert not losses.gram_distillation_loss(s, t).requires_grad  # teacher detached, student is a constant here


# ----- GIFT -----

def test_gift_contrastive_distillation_is_zero_at_the_teacher_and_positive_elsewhere() -> None:
    img, text = unit(6, 8), unit(6, 8)
    assert losses.gift_contrastive_distillation(img, img, text, 10.0) == pytest.approx(0.0, abs=1e-5)
    other = unit(6, 8)
    value = losses.gift_contrastive_distillation(other, img, text, 10.0, temperature=2.0)
    zs, zt = 10 * other @ text.T, 10 * img @ text.T

    def kl_rows(a: torch.Tensor, b: torch.Tensor) -> float:  # mean_rows KL(softmax(b/2) ‖ softmax(a/2))
        out = 0.0
        for i in range(a.shape[0]):
            p = torch.softmax(b[i] / 2, 0)
            q = torch.softmax(a[i] / 2, 0)
            out += sum(p[j].item() * math.log(p[j].item() / q[j].item()) for j in range(a.shape[1]))
        return out / a.shape[0]

    assert value.item() > 0 and value == pytest.approx(4 * (kl_rows(zs, zt) + kl_rows(zs.T, zt.T)), rel=1e-4)


def test_gift_distillation_has_the_gradient_of_gifts_soft_cross_entropy() -> None:
    img, text = unit(5, 8), unit(5, 8)
    s1 = unit(5, 8).requires_grad_()
    s2 = s1.detach().clone().requires_grad_()
    losses.gift_contrastive_distillation(s1, img, text, 10.0, temperature=2.0).backward()
    zs, zt = 10 * s2 @ text.T / 2, 10 * img @ text.T / 2
    soft_ce = sum(-(torch.softmax(t, -1) * torch.log_softmax(s, -1)).sum(-1).mean()
                  for s, t in ((zs, zt), (zs.T, zt.T)))
    (4 * soft_ce).backward()  # GIFT's literal form: T²·[CE_soft + CE_soft]
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-4, atol=1e-6)


def test_gift_alignment_shares_target_mass_within_a_class() -> None:
    img, text = unit(4, 8), unit(4, 8)
    classes = torch.tensor([0, 0, 1, 2])
    z = 5 * img @ text.T
    y = [[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # images 0 and 1 share class 0
    manual = 0.0
    for zz in (z, z.T):
        logp = torch.log_softmax(zz, -1)
        manual += -sum(y[i][j] * logp[i, j].item() for i in range(4) for j in range(4)) / 4
    assert losses.gift_alignment_loss(img, text, classes, 5.0) == pytest.approx(manual, rel=1e-5)
    # with all-distinct classes it is plain CLIP cross-entropy with diagonal targets
    eye = F.cross_entropy(z, torch.arange(4)) + F.cross_entropy(z.T, torch.arange(4))
    assert losses.gift_alignment_loss(img, text, torch.arange(4), 5.0) == pytest.approx(eye.item(), rel=1e-5)


def test_gift_alignment_smooths_its_targets_as_gifts_code() -> None:
    # GIFT: F.cross_entropy(logits, Y, label_smoothing=0.2) on soft targets = targets (1−ε)·Y + ε/B
    img, text, eps = unit(4, 8), unit(4, 8), 0.2
    classes = torch.tensor([0, 0, 1, 2])
    z = 5 * img @ text.T
    y = [[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    manual = 0.0
    for zz in (z, z.T):
        logp = torch.log_softmax(zz, -1)
        manual += -sum(((1 - eps) * y[i][j] + eps / 4) * logp[i, j].item() for i in range(4) for j in range(4)) / 4
    value = losses.gift_alignment_loss(img, text, classes, 5.0, label_smoothing=eps)
    assert value == pytest.approx(manual, rel=1e-5)
    assert value != pytest.approx(losses.gift_alignment_loss(img, text, classes, 5.0).item(), rel=1e-3)


# ----- Poincaré ball (LatHAdapter-style) -----

@pytest.mark.parametrize("c", [1.0, 0.5])
def test_expmap0_maps_into_the_ball_with_the_tanh_radius(c: float) -> None:
    v = torch.randn(6, 4)
    x = losses.expmap0(v, c)
    torch.testing.assert_close(x.norm(dim=-1), torch.tanh(math.sqrt(c) * v.norm(dim=-1)) / math.sqrt(c))
    torch.testing.assert_close(F.normalize(x, dim=-1), F.normalize(v, dim=-1))  # direction kept
    far = losses.expmap0(1e4 * v, c)  # tanh rounds to 1 in float32: must still be strictly inside
    assert (far.norm(dim=-1) < 1 / math.sqrt(c)).all()
    assert losses.expmap0(torch.zeros(2, 4), c).abs().max() == 0


def test_mobius_addition_identities() -> None:
    c, x, y = 0.7, ball(5, 3, 0.7), ball(5, 3, 0.7)
    zero = torch.zeros(5, 3)
    torch.testing.assert_close(losses.mobius_add(x, zero, c), x)
    torch.testing.assert_close(losses.mobius_add(zero, y, c), y)
    torch.testing.assert_close(losses.mobius_add(-x, x, c), zero, atol=1e-6, rtol=0)
    # left cancellation law of the gyrogroup: (−x) ⊕ (x ⊕ y) = y
    torch.testing.assert_close(losses.mobius_add(-x, losses.mobius_add(x, y, c), c), y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_poincare_distance_is_a_symmetric_metric_matching_the_arcosh_form(c: float) -> None:
    x, y = ball(6, 4, c), ball(6, 4, c)
    d = losses.poincare_distance(x, y, c)
    assert d.shape == (6,)
    torch.testing.assert_close(d, losses.poincare_distance(y, x, c), rtol=1e-4, atol=1e-5)
    assert losses.poincare_distance(x, x, c).abs().max() < 1e-5
    for i in range(6):
        assert d[i].item() == pytest.approx(arcosh_distance(x[i], y[i], c), rel=1e-4)
    d0 = losses.poincare_distance(torch.zeros(6, 4), x, c)  # d(0,x) = (2/√c)·artanh(√c‖x‖)
    torch.testing.assert_close(d0, 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * x.norm(dim=-1)))


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_poincare_distance_from_inner_products_matches_the_mobius_form(c: float) -> None:
    x, y = ball(7, 5, c), ball(7, 5, c)
    from_gram = losses.poincare_distance_from_gram((x * y).sum(-1), x.pow(2).sum(-1), y.pow(2).sum(-1), c)
    torch.testing.assert_close(from_gram, losses.poincare_distance(x, y, c), rtol=1e-4, atol=1e-5)


def test_pairwise_poincare_distance_matches_the_elementwise_one() -> None:
    c, x, y = 0.8, ball(5, 3, 0.8), ball(4, 3, 0.8)
    pw = losses.pairwise_poincare_distance(x, y, c)
    assert pw.shape == (5, 4)
    loops = torch.stack([torch.stack([losses.poincare_distance(x[i], y[j], c) for j in range(4)]) for i in range(5)])
    torch.testing.assert_close(pw, loops, rtol=1e-4, atol=1e-5)
    self_d = losses.pairwise_poincare_distance(x, x, c)
    assert self_d.diagonal().abs().max() == 0
    torch.testing.assert_close(self_d, self_d.T, rtol=1e-5, atol=1e-6)


def test_distances_stay_finite_at_the_boundary() -> None:
    c = 1.0
    edge = unit(3, 4) * (1 - 1e-9)  # rounds to the boundary in float32
    assert torch.isfinite(losses.poincare_distance(edge, -edge, c)).all()
    assert torch.isfinite(losses.pairwise_poincare_distance(edge, -edge, c)).all()


def test_hierarchy_regularizer_matches_a_hand_computation() -> None:
    c = 0.5
    classes, attrs, imgs = ball(3, 4, c, 0.4), ball(5, 4, c), ball(4, 4, c)
    owner, img_class = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([2, 0, 0, 1])
    pull_img = sum(arcosh_distance(imgs[b], classes[img_class[b]], c) for b in range(4)) / 4
    pull_attr = sum(arcosh_distance(attrs[a], classes[owner[a]], c) for a in range(5)) / 5
    order = sum(max(0.0, classes[img_class[b]].norm().item() - imgs[b].norm().item() + 0.1) for b in range(4)) / 4
    value = losses.hierarchy_regularizer(classes, attrs, owner, imgs, img_class, c, margin=0.1)
    assert value == pytest.approx(pull_img + pull_attr + order, rel=1e-4)


def test_hierarchy_norm_ordering_hinge() -> None:
    c, direction = 1.0, unit(1, 3)
    cls, img = 0.2 * direction, 0.6 * direction  # same ray: only the hinge and the pull differ from 0
    pull = 2 * (math.atanh(0.6) - math.atanh(0.2))  # d along a ray through 0 = difference of d(0, ·)
    reg = lambda cl, im, m: losses.hierarchy_regularizer(cl, cl[:0], torch.zeros(0, dtype=torch.long),  # noqa: E731
                                                         im, torch.tensor([0]), c, margin=m)
    assert reg(cls, img, 0.1) == pytest.approx(pull, rel=1e-4)  # ‖class‖ + margin < ‖img‖: hinge inactive
    assert reg(img, cls, 0.1) == pytest.approx(pull + 0.4 + 0.1, rel=1e-4)  # class outside its image: penalised


# ----- autograd, dtype, device -----

def test_hyperbolic_gradients_are_finite_at_zero_and_on_the_diagonal() -> None:
    v = torch.zeros(3, 4, requires_grad=True)
    x = losses.expmap0(v, 1.0)
    x.sum().backward()
    torch.testing.assert_close(v.grad, torch.ones(3, 4))  # exp₀ is the identity to first order at 0
    p = ball(3, 4, 1.0).requires_grad_()
    total = losses.poincare_distance(p, p.detach(), 1.0).sum() + losses.pairwise_poincare_distance(p, p, 1.0).sum()
    total = total + losses.hierarchy_regularizer(p, p, torch.arange(3), torch.zeros(3, 4), torch.arange(3), 1.0)
    total.backward()
    assert torch.isfinite(p.grad).all()


def test_losses_backpropagate_and_run_under_bf16_autocast() -> None:
    x = torch.randn(6, 8, requires_grad=True)
    clf, teacher, text = losses.CosineClassifier(8, 3), unit(6, 8), unit(6, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def total() -> torch.Tensor:
        emb = F.normalize(x, dim=-1).bfloat16()  # what a bf16-autocast backbone hands over, in both runs
        cos = clf(emb)
        pts = losses.expmap0(emb, 1.0)
        return (losses.margin_softmax_loss(cos, y, kind="arcface", margin=0.2)
                + losses.embedding_distillation_loss(emb, teacher)
                + losses.logit_distillation_loss(cos, cos.detach() + 0.1, 1.0, 2.0)
                + losses.gram_distillation_loss(emb, teacher)
                + losses.gift_contrastive_distillation(emb, teacher, text, 10.0)
                + losses.gift_alignment_loss(emb, text, y, 10.0)
                + losses.pairwise_poincare_distance(pts, losses.expmap0(text, 1.0), 1.0).mean()
                + losses.hierarchy_regularizer(pts[:3], pts[3:], torch.arange(3), pts, y, 1.0))

    reference = total()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = total()
    assert mixed.dtype == torch.float32
    mixed.backward()
    assert torch.isfinite(x.grad).all() and math.isfinite(mixed.item())
    # same inputs, same value: autocast did not push the losses' matmuls/reductions down to bf16
    assert mixed.item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_losses_agree_on_cuda() -> None:
    s, t, text = unit(6, 8), unit(6, 8), unit(6, 8)
    for fn in (losses.embedding_distillation_loss, losses.gram_distillation_loss):
        assert fn(s.cuda(), t.cuda()).item() == pytest.approx(fn(s, t).item(), rel=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu = losses.gift_contrastive_distillation(s.cuda(), t.cuda(), text.cuda(), 10.0)
    assert gpu.item() == pytest.approx(losses.gift_contrastive_distillation(s, t, text, 10.0).item(), rel=1e-4)
    pts = losses.expmap0(s, 1.0)
    torch.testing.assert_close(losses.pairwise_poincare_distance(pts.cuda(), pts.cuda(), 1.0).cpu(),
                               losses.pairwise_poincare_distance(pts, pts, 1.0), rtol=1e-4, atol=1e-5)
