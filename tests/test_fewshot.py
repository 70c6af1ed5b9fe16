"""The adapter family on toy features: each method's defining property, on tensors small enough to
check by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.lib import fewshot, losses

S = fewshot.FewShotSettings(steps=150, lr=1e-2, logit_scale=20.0)  # the stage sets the model's own scale


def toy(n_classes: int = 6, per_class: int = 8, dim: int = 16, noise: float = 0.9, seed: int = 0):
    """Class texts t_c; images = normalize(t_c + noise), so zero-shot works but is far from perfect."""
    g = torch.Generator().manual_seed(seed)
    t = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    f = F.normalize(t[y] + noise * torch.randn(len(y), dim, generator=g), dim=-1)
    return f, y, t


def test_zero_shot_is_scaled_cosine_to_the_class_texts() -> None:
    f, y, t = toy()
    logits = fewshot.make("zero_shot", 16, S).fit(f, y, t, S).predict(f, t, base=True)
    torch.testing.assert_close(logits, S.logit_scale * f @ t.T)


def test_tip_adapter_cache_recalls_its_shots_and_is_zero_shot_on_novel_classes() -> None:
    f, y, t = toy(noise=3.0)  # zero-shot is poor here
    tip = fewshot.TipAdapter(alpha=250.0, beta=50.0).fit(f, y, t, S)  # Tip units: 50 at this scale of 20
    assert fewshot.accuracy(tip.predict(f, t, base=True), y) == 1.0  # each shot retrieves itself
    torch.testing.assert_close(tip.predict(f, t, base=False), S.logit_scale * f @ t.T)


def test_tip_adapter_logits_use_the_models_scale_by_hand() -> None:
    f, y, t = toy(n_classes=3, per_class=2, dim=4)
    s = fewshot.FewShotSettings(logit_scale=112.5)  # e.g. SigLIP's exp(logit_scale)
    tip = fewshot.TipAdapter(alpha=1.7, beta=4.0).fit(f, y, t, s)
    q = toy(n_classes=3, per_class=1, dim=4, seed=1)[0]
    got = tip.predict(q, t, base=True)
    for i in range(3):
        for c in range(3):
            zero_shot = 112.5 * sum(q[i, d].item() * t[c, d].item() for d in range(4))
            cache = sum(math.exp(-4.0 * (1 - sum(q[i, d].item() * f[j, d].item() for d in range(4))))
                        for j in range(6) if y[j] == c)
            # α in Tip-Adapter's units: its code weighs the cache against zero-shot logits at scale 100
            assert got[i, c].item() == pytest.approx(zero_shot + 1.7 * 112.5 / 100 * cache, rel=1e-5)
    with pytest.raises(ValueError, match="logit_scale"):
        fewshot.TipAdapter().fit(f, y, t, fewshot.FewShotSettings())


def test_tip_adapter_searches_alpha_beta_on_val_as_its_code() -> None:
    f, y, t = toy(noise=1.5, per_class=3)
    f_val, y_val, _ = toy(noise=1.5, per_class=20, seed=3)
    s = fewshot.FewShotSettings(logit_scale=20.0, tip_search_scale=[7.0, 3.0], tip_search_steps=[12, 6])
    tip = fewshot.TipAdapter().fit(f, y, t, s, val=(f_val, y_val))
    # Tip-Adapter's search_hp: β outer, α inner, 0.1 + i·(max − 0.1)/steps, strictly better replaces
    betas = [0.1 + i * (7.0 - 0.1) / 12 for i in range(12)]
    alphas = [0.1 + j * (3.0 - 0.1) / 6 for j in range(6)]
    best_acc, best = 0.0, None
    for beta in betas:
        for alpha in alphas:
            cache = torch.exp(-beta * (1 - f_val @ f.T)) @ F.one_hot(y, 6).float()
            logits = 20.0 * f_val @ t.T + alpha * 20.0 / 100 * cache  # α in Tip-Adapter's units (scale 100)
            acc = float((logits.argmax(1) == y_val).float().mean())
            if acc > best_acc:
                best_acc, best = acc, (beta, alpha)
    assert (tip.beta, tip.alpha) == pytest.approx(best) and tip.val_accuracy == pytest.approx(best_acc)
    assert tip.val_accuracy >= fewshot.accuracy(20.0 * f_val @ t.T, y_val)  # α→0.1 ≈ zero-shot is in the grid
    with pytest.raises(ValueError, match="validation images"):
        fewshot.TipAdapter().fit(f, y, t, s, val=(f_val[:0], y_val[:0]))


def test_zero_shot_part_of_every_method_uses_the_settings_scale() -> None:
    f, y, t = toy()
    for scale in (20.0, 100.0):
        s = fewshot.FewShotSettings(logit_scale=scale, steps=0)
        torch.testing.assert_close(fewshot.make("zero_shot", 16, s).fit(f, y, t, s).predict(f, t, True), scale * f @ t.T)
        clip_adapter = fewshot.make("clip_adapter", 16, s).fit(f, y, t, s)
        torch.testing.assert_close(clip_adapter.predict(f, t, True), scale * clip_adapter.adapt(f) @ t.T)


def test_linear_probe_has_no_novel_classes_and_fits_its_shots() -> None:
    f, y, t = toy()
    probe = fewshot.make("linear_probe", 16, S).fit(f, y, t, S)
    assert fewshot.FEWSHOT_METHODS["linear_probe"].novel is False
    assert fewshot.accuracy(probe.predict(f, t, True), y) > 0.9


@pytest.mark.parametrize("geometry", ["hyperbolic", "cosine"])
def test_lathadapter_starts_as_zero_shot_ranking_and_learns_the_shots(geometry: str) -> None:
    f, y, t = toy()
    s = fewshot.FewShotSettings(**{**S.__dict__, "geometry": geometry})
    model = fewshot.make("lathadapter", 16, s)
    img, cls, attrs = model.points(f, t)
    assert attrs.shape == (6 * s.attributes, 16)
    if geometry == "hyperbolic":  # inside the ball, classes nearer the origin than images
        assert img.norm(dim=-1).max() < 1 and attrs.norm(dim=-1).max() < 1
        assert cls.norm(dim=-1).max() < img.norm(dim=-1).min()
    # adapters start as the identity: same ranking as zero-shot (distance is monotone in cosine
    # for points at fixed radii)
    with torch.no_grad():
        assert torch.equal(model.predict(f, t, True).argmax(1), (f @ t.T).argmax(1))
    zero = fewshot.accuracy(f @ t.T, y)
    model.fit(f, y, t, s)
    assert fewshot.accuracy(model.predict(f, t, True), y) > zero


def test_lathadapter_hierarchy_terms_enter_the_loss() -> None:
    f, y, t = toy()
    plain = fewshot.LatHAdapter(16, fewshot.FewShotSettings(hierarchy_weight=0.0))
    with_hier = fewshot.LatHAdapter(16, fewshot.FewShotSettings(hierarchy_weight=1.0))
    img, cls, attrs = with_hier.points(f, t)
    owner = torch.arange(6).repeat_interleave(with_hier.s.attributes)
    hier = losses.hierarchy_regularizer(cls, attrs, owner, img, y, 1.0)
    assert hier > 0
    assert with_hier.loss(f, y, t) > plain.loss(f, y, t)


def test_shots_are_k_per_class_from_that_class() -> None:
    _, y, _ = toy(per_class=5)
    idx = fewshot.sample_shots(y, torch.tensor([1, 4]), 3, torch.Generator().manual_seed(0))
    assert sorted(y[idx].tolist()) == [1, 1, 1, 4, 4, 4]
    with pytest.raises(ValueError, match="unknown few-shot method"):
        fewshot.make("coop", 16, S)
