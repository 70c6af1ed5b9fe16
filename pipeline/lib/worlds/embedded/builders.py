"""Building the embedded datasets: the web's subsets (declared in `web.py`) and the targets.

Each builder returns images with their split; the `prepare` stage packs them into a manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from hydra.utils import get_method

from pipeline.lib.splits import class_disjoint_split, stratified_split
from pipeline.lib.worlds.embedded.animals import load_animal_mnist
from pipeline.lib.worlds.embedded.common import ImageSet
from pipeline.lib.worlds.embedded.flags import flag_classes, render_flags
from pipeline.lib.worlds.embedded.glyphs import glyph_partition, glyph_variation, render_glyphs
from pipeline.lib.worlds.embedded.patterns import render_patterns
from pipeline.lib.worlds.embedded.shapes import render_shapes
from pipeline.lib.worlds.embedded.web import NOVEL, SPLITS, WEB_SUBSETS, check_web_subset


@dataclass
class Subset:
    images: ImageSet
    splits: list[str]           # per image: train | val | test


def _split_options(options: dict) -> dict[str, float]:
    return {s: options[s] for s in SPLITS if options.get(s)}


def _counted(render: Callable[[int, int], ImageSet], options: dict, seed: int) -> Subset:
    counts = {s: int(n) for s, n in _split_options(options).items()}
    images = render(sum(counts.values()), seed)
    return Subset(images, [s for s, n in counts.items() for _ in range(n)])


def _stratified(images: ImageSet, options: dict, seed: int) -> Subset:
    parts = stratified_split(images.labels, _split_options(options), seed)
    split_of = np.full(len(images.labels), "", dtype=object)
    for split, idx in parts.items():
        split_of[idx] = split
    keep = split_of != ""
    kept = ImageSet(images.images[keep], images.labels[keep], images.class_names,
                    [c for c, k in zip(images.captions, keep) if k])
    return Subset(kept, list(split_of[keep]))


def shapes(options: dict, seed: int) -> Subset:
    return _counted(render_shapes, options, seed)


def patterns(options: dict, seed: int) -> Subset:
    return _counted(render_patterns, options, seed)


def animals(options: dict, seed: int) -> Subset:
    return _stratified(load_animal_mnist(), options, seed)


def symbols(options: dict, seed: int) -> Subset:
    classes = glyph_partition("symbols", int(options.get("class_offset", 0)), int(options["n_classes"]))
    images = render_glyphs(classes, int(options["per_class"]), seed, noun="symbol", variation=glyph_variation(options))
    return _stratified(images, options, seed)


def build_web_subset(name: str, options: dict, seed: int) -> Subset:
    """One subset of the embedded web, its images' splits included (a pure function of its arguments)."""
    problem = check_web_subset(name, options)
    if problem:
        raise ValueError(f"web subset '{name}': {problem}")
    return get_method(WEB_SUBSETS[name].build)(options, seed)


def held_out_categories(n_categories: int, share: float, seed: int) -> np.ndarray:
    """round(share × n) categories (sorted) drawn with `seed`, at least one when share > 0."""
    if share <= 0:
        return np.zeros(0, np.int64)
    count = min(max(1, int(round(share * n_categories))), n_categories - 1)
    return np.sort(np.random.default_rng(seed).choice(n_categories, count, replace=False))


def split_novel(name: str, part: Subset, options: dict) -> dict[str, Subset]:
    """The subset, and its `<name>_novel` part: the images of `novel_share` of its categories (a shape
    type in every colour, a pattern type, a symbol), drawn with `novel_seed`. Labels are kept, so the
    two parts have disjoint classes."""
    per = WEB_SUBSETS[name].per_category
    categories = len(part.images.class_names) // per
    held = held_out_categories(categories, float(options.get("novel_share", 0)), int(options.get("novel_seed", 0)))
    novel = np.isin(part.images.labels // per, held)
    if not novel.any():
        return {name: part}

    def take(mask: np.ndarray) -> Subset:
        s = part.images
        return Subset(ImageSet(s.images[mask], s.labels[mask], s.class_names,
                               [c for c, m in zip(s.captions, mask) if m]),
                      [sp for sp, m in zip(part.splits, mask) if m])
    return {name: take(~novel), name + NOVEL: take(novel)}


def class_disjoint(images: ImageSet, n_classes: int, seed: int, test_fraction: float,
                   val_fraction: float) -> Subset:
    """A fine-grained target: whole classes go to train / val / test (open-set retrieval)."""
    class_split = class_disjoint_split(n_classes, seed, test_fraction, val_fraction)
    split_of_class = {int(c): s for s, classes in class_split.items() for c in classes}
    return Subset(images, [split_of_class[int(c)] for c in images.labels])


def flags(n_classes: int, per_class: int, seed: int, test_fraction: float, val_fraction: float) -> Subset:
    """`n_classes` flags drawn with `seed`, class-disjoint splits."""
    images = render_flags(flag_classes(n_classes, seed), per_class=per_class, seed=seed)
    return class_disjoint(images, n_classes, seed, test_fraction, val_fraction)


def glyphs(class_offset: int, n_classes: int, per_class: int, seed: int, test_fraction: float,
           val_fraction: float) -> Subset:
    """Letters [class_offset, class_offset + n_classes) of the fixed shuffle of all letters."""
    images = render_glyphs(glyph_partition("letters", class_offset, n_classes), per_class=per_class, seed=seed)
    return class_disjoint(images, n_classes, seed, test_fraction, val_fraction)
