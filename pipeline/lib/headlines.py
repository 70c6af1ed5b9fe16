"""The headline metrics, declared once: what reports/metrics.json holds per method (`summary.<method>.<key>`
and `.delta_<key>`), in the order report.md, the plots, the seeds table and the model card show them.

A headline is the mean, in points, of one per-set metric over a group of evaluation sets: the
image-image sets of one domain (`in` / `out`) and, optionally, of some kinds (`replay`, `unseen`),
every image-text set (optionally of some kinds), or every zero-shot set. A group without sets is left
out. A new headline is one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.lib.metrics import at

BASELINE = "pretrained"  # the method every Δ is measured against: the teacher itself

@dataclass(frozen=True)
class Headline:
    name: str                     # summary.<method>.<name>; .delta_<name> is the change against the baseline
    title: str                    # column title in tables
    label: str                    # axis and panel title in plots, row name in the model card
    group: str                    # the result's group: image_image | image_text | zero_shot
    metric: str                   # its per-set metric (a key of `pipeline.lib.metrics`' results)
    rank: int | str | None = None  # the metric's rank: a number, "k" for eval.k, None for a rank-free metric
    domain: str | None = None     # image-image: "in" (the target) or "out"
    kinds: tuple[str, ...] | None = None  # only sets of these kinds (None: every kind)

    def key(self, k: int) -> str:
        """The per-set metric's key at eval.k = k."""
        if self.rank is None:
            return self.metric
        return at(self.metric, k if self.rank == "k" else int(self.rank))

    def sets(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        return [m for m in result.get(self.group, {}).values()
                if (self.domain is None or m.get("domain") == self.domain)
                and (self.kinds is None or m.get("kind") in self.kinds)]


_II, _TEXT, _ZS = ("image_image", "map", "k"), ("image_text", "mean_r", 1), ("zero_shot", "accuracy")
_UNSEEN = ("near", "far")
HEADLINES: dict[str, Headline] = {h.name: h for h in (
    Headline("in_domain", "in-domain", "In-domain image-image", *_II, domain="in"),
    Headline("ood_replay", "OOD replay", "Replay-domain image-image", *_II, domain="out", kinds=("replay",)),
    Headline("ood_near", "OOD near", "Near-unseen image-image", *_II, domain="out", kinds=("near",)),
    Headline("ood_far", "OOD far", "Far-unseen image-image", *_II, domain="out", kinds=("far",)),
    Headline("ood_unseen", "OOD unseen", "Unseen-domain image-image (near and far)", *_II, domain="out",
             kinds=_UNSEEN),
    Headline("ood_image_image", "OOD image-image", "Out-of-domain image-image (all)", *_II, domain="out"),
    Headline("ood_image_text_replay", "text replay", "Replay-domain image-text", *_TEXT, kinds=("replay",)),
    Headline("ood_image_text_near", "text near", "Near-unseen image-text", *_TEXT, kinds=("near",)),
    Headline("ood_image_text_far", "text far", "Far-unseen image-text", *_TEXT, kinds=("far",)),
    Headline("ood_image_text_unseen", "text unseen", "Unseen-domain image-text (near and far)", *_TEXT,
             kinds=_UNSEEN),
    Headline("ood_image_text", "OOD image-text", "Out-of-domain image-text (all)", *_TEXT),
    Headline("zero_shot_near", "zero-shot near", "Zero-shot accuracy, near-unseen classes", *_ZS, kinds=("near",)),
    Headline("zero_shot_far", "zero-shot far", "Zero-shot accuracy, far-unseen classes", *_ZS, kinds=("far",)),
    Headline("zero_shot", "zero-shot", "Zero-shot accuracy", *_ZS),
)}
IMAGE_IMAGE_METRICS = ("top_1", "map@k", "map@r")  # the image-image headlines are also given at these


def register(headline: Headline) -> None:
    """Add (or replace) a headline: the summary, report.md, the plots and the seeds table then show it."""
    HEADLINES[headline.name] = headline


def headline_values(result: dict[str, Any], k: int, image_image_metric: str | None = None) -> dict[str, float]:
    """The headline numbers of one evaluation (absolute, in points), in declaration order; with
    `image_image_metric` ("top_1", "map@r", ...), the image-image headlines use that metric instead."""
    out = {}
    for h in HEADLINES.values():
        if image_image_metric is not None and h.group != "image_image":
            continue
        key = h.key(k) if image_image_metric in (None, "map@k") else image_image_metric
        values = [100 * m[key] for m in h.sets(result)]
        if values:
            out[h.name] = float(np.mean(values))
    return out


def label(name: str) -> str:
    """Readable name of a headline (`delta_zero_shot` → 'Zero-shot accuracy'); unknown names by their words."""
    name = name.removeprefix("delta_")
    if name in HEADLINES:
        return HEADLINES[name].label
    return name.replace("ood_", "out-of-domain ").replace("_", " ").capitalize()


def title(name: str) -> str:
    return HEADLINES[name].title if name in HEADLINES else name.replace("_", " ")
