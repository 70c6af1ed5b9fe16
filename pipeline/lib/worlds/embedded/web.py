"""The embedded "web" the teacher pretrains on, declared: its subsets and the options each takes.

A declaration only (no renderer is imported here), so params validation can check a subset's
options without loading PIL or the fonts; `builders.py` builds the images. Procedural subsets
(shapes, patterns) take image COUNTS per split; subsets of fixed classes (animals, symbols) take the
SHARE of each class's images per split, which may sum to less than 1 (the rest is left out).
"""
from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")
NOVEL = "_novel"  # `<subset>_novel`: the subset's held-out categories (`novel_share` of them), its own subset
NOVEL_OPTIONS = frozenset({"novel_share", "novel_seed"})


@dataclass(frozen=True)
class WebSubset:
    name: str
    build: str                    # dotted name of its builder: (options, seed) -> builders.Subset
    counted: bool                 # split sizes are image counts (else shares of each class's images)
    options: frozenset[str] = frozenset()  # option keys besides the split sizes
    per_category: int = 1         # classes per category (shape × 8 colours: 8), what `novel_share` holds out


def novel_of(subset: str) -> str | None:
    """The subset whose held-out categories `subset` holds (`shapes_novel` → `shapes`), else None."""
    return subset.removesuffix(NOVEL) if subset.endswith(NOVEL) and subset != NOVEL else None


_GLYPH_OPTIONS = frozenset({"n_classes", "per_class", "class_offset", "styles", "size", "max_rotation"})
_BUILDERS = "pipeline.lib.worlds.embedded.builders"
WEB_SUBSETS: dict[str, WebSubset] = {s.name: s for s in (
    WebSubset("shapes", f"{_BUILDERS}.shapes", counted=True, per_category=8),      # shape × 8 colours
    WebSubset("animals", f"{_BUILDERS}.animals", counted=False),
    WebSubset("patterns", f"{_BUILDERS}.patterns", counted=True, per_category=8),  # pattern × 8 colours
    WebSubset("symbols", f"{_BUILDERS}.symbols", counted=False, options=_GLYPH_OPTIONS),
)}


def _split_sizes_problem(subset: WebSubset, options: dict) -> str | None:
    if any(not isinstance(options.get(s, 0), (int, float)) or options.get(s, 0) < 0 for s in SPLITS):
        return "split sizes must be numbers >= 0"
    if not subset.counted and sum(options.get(s, 0) for s in SPLITS) > 1.0 + 1e-9:
        return "split shares of each class's images must sum to at most 1"
    if subset.counted and any(float(options.get(s, 0)) != int(options.get(s, 0)) for s in SPLITS):
        return "split sizes are image counts (integers)"
    return None


def check_web_subset(name: str, options: dict) -> str | None:
    """None if `options` are valid for subset `name`, else what is wrong (no rendering)."""
    if name not in WEB_SUBSETS:
        return f"unknown subset '{name}' (known: {sorted(WEB_SUBSETS)})"
    subset = WEB_SUBSETS[name]
    keys = frozenset(SPLITS) | subset.options | NOVEL_OPTIONS
    unknown = sorted(set(options) - keys)
    if unknown:
        return f"unknown option(s) {unknown} (valid: {sorted(keys)})"
    problem = _split_sizes_problem(subset, options)
    if problem:
        return problem
    share = options.get("novel_share", 0)
    if not isinstance(share, (int, float)) or not 0 <= share < 1:
        return f"novel_share must be a share of the categories in [0, 1), got {share}"
    if {"n_classes", "per_class"} & subset.options:
        for key in ("n_classes", "per_class"):
            if not isinstance(options.get(key), int) or options[key] < 1:
                return f"{key} must be an integer >= 1"
        if options.get("class_offset", 0) < 0:
            return "class_offset must be >= 0"
    return None
