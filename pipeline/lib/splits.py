"""How images are split: whole classes to train / val / test (open-set retrieval), or shares of each class.

`class_disjoint_split` is the one class-level split of the project: the embedded target, users'
folders and real datasets without a split of their own all go through it.
"""
from __future__ import annotations

import numpy as np


def _share(n: int, fraction: float) -> int:
    """round(fraction·n) classes, at least one and leaving at least one when there are two or more."""
    if fraction <= 0 or n == 0:
        return 0
    count = int(round(n * fraction))
    return min(max(count, 1), n - 1) if n > 1 else n


def class_disjoint_split(classes: np.ndarray | int, seed: int, test_fraction: float | None,
                         val_fraction: float) -> dict[str, np.ndarray]:
    """Class-disjoint 'train' / 'val' / 'test' class lists (each sorted) of `classes` (labels, or n for
    range(n)).

    One permutation of the classes (`seed`): its first `test_fraction` are test (none when the data
    has a test split of its own: `test_fraction=None`), the next `val_fraction` of the rest are val
    (model selection on classes no training step sees), the remaining classes train.
    """
    for name, value in (("test_fraction", test_fraction or 0.0), ("val_fraction", val_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    pool = np.arange(classes) if isinstance(classes, (int, np.integer)) else np.unique(classes)
    perm = np.random.default_rng(seed).permutation(pool)
    n_test = _share(len(pool), test_fraction) if test_fraction is not None else 0
    n_val = _share(len(pool) - n_test, val_fraction)
    return {"train": np.sort(perm[n_test + n_val:]), "val": np.sort(perm[n_test:n_test + n_val]),
            "test": np.sort(perm[:n_test])}


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Per-class random split of indices (sorted) by `fractions`, e.g. {"train": 0.8, "test": 0.2}.

    Fractions may sum to < 1 (the rest is left out). Rounding is on cumulative fractions, so the
    parts of one class always add up to round(sum × class size).
    """
    values = np.array(list(fractions.values()), np.float64)
    if (values < 0).any() or values.sum() > 1.0 + 1e-9:
        raise ValueError(f"fractions must be >= 0 and sum to <= 1, got {fractions}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in fractions}
    bounds = np.concatenate([[0.0], np.cumsum(values)])
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.rint(bounds * len(idx)).astype(int)
        for k, name in enumerate(fractions):
            parts[name].append(idx[cuts[k]:cuts[k + 1]])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64)
            for k, v in parts.items()}

