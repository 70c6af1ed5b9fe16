"""The adapter family on toy features: each method's defining property, on tensors small enough to
check by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.lib import fewshot, losses

S = fewshot.FewShotSettings(steps=150, lr=1e-2)


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
    tip = fewshot.TipAdapter(alpha=50.0, beta=50.0).fit(f, y, t, S)
    assert fewshot.accuracy(tip.predict(f, t, base=True), y) == 1.0  # each shot retrieves itself
    torch.testing.assert_close(tip.predict(f, t, base=False), S.logit_scale * f @ t.T)


def test_linear_probe_has_no_novel_classes_and_fits_its_shots() -> None:
    f, y, t = toy()
    probe = fewshot.make("linear_probe", 16, S).fit(f, y, t, S)
    assert probe.novel is False
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
