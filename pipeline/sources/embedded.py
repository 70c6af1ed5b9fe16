"""Readers of the embedded sources: the offline world's images packed into manifest rows.

Embedded datasets pack their tiny PNGs into the manifest's `image` column (one file for DVC to hash
instead of tens of thousands); `path` is a name for each image within its subset.
"""
from __future__ import annotations

import io
import zlib
from typing import Any

import numpy as np
import polars as pl
from PIL import Image

from pipeline.lib.worlds.embedded import builders
from pipeline.lib.worlds.embedded.builders import Subset


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def subset_frame(dataset: str, subset: str, part: Subset, label_offset: int = 0) -> pl.DataFrame:
    """Manifest rows of one subset (no `id` yet): images packed as PNG bytes."""
    s, n = part.images, len(part.images.labels)
    return pl.DataFrame({
        "dataset": [dataset] * n,
        "split": part.splits,
        "subset": [subset] * n,
        "label": (np.asarray(s.labels, np.int64) + label_offset),
        "class_name": [s.class_names[i] for i in s.labels],
        "path": [f"{subset}/{i:06d}.png" for i in range(n)],
        "image": [png_bytes(img) for img in s.images],
        "captions": s.captions,
    }, schema_overrides={"image": pl.Binary, "captions": pl.List(pl.String)})


def flags(name: str, cfg: Any) -> tuple[pl.DataFrame, dict]:
    """Fine-grained target: `n_classes` flags (layout × ordered colours), class-disjoint splits."""
    part = builders.flags(cfg.n_classes, cfg.per_class, cfg.seed, cfg.test_class_fraction, cfg.val_class_fraction)
    return subset_frame(name, "flags", part), {}


def glyphs(name: str, cfg: Any) -> tuple[pl.DataFrame, dict]:
    """Fine-grained target: `n_classes` letters from `class_offset` of the fixed shuffle of all letters."""
    part = builders.glyphs(cfg.class_offset, cfg.n_classes, cfg.per_class, cfg.seed, cfg.test_class_fraction,
                           cfg.val_class_fraction)
    return subset_frame(name, "glyphs", part), {}


def subset_seed(seed: int, subset: str) -> int:
    """A seed per (dataset seed, subset name): adding or resizing one subset leaves the others' images alone."""
    return int(np.random.SeedSequence([seed, zlib.crc32(subset.encode())]).generate_state(1)[0])


def web(name: str, cfg: Any) -> tuple[pl.DataFrame, dict]:
    """The embedded "web" the teacher pretrains on: named subsets, each split as its options say, each
    with its held-out categories as `<subset>_novel` when `novel_share` > 0. Labels are made unique
    across subsets by offsetting each subset's labels by the classes of the subsets before it."""
    frames, offset = [], 0
    for subset, options in cfg.subsets.items():
        part = builders.build_web_subset(subset, dict(options), subset_seed(cfg.seed, subset))
        for piece, images in builders.split_novel(subset, part, dict(options)).items():
            frames.append(subset_frame(name, piece, images, label_offset=offset))
        offset += len(part.images.class_names)
    return pl.concat(frames), {}
