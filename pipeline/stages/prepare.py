"""Stage `prepare <dataset>`: build one dataset's manifest with its splits.

Output `data/prepared/<dataset>/manifest.parquet`, one row per image:
id, dataset, split, subset, label, class_name, path, image (encoded bytes or null), captions.
Embedded datasets pack their tiny PNGs into the `image` column (one file for DVC to hash instead of
tens of thousands); real datasets keep `image` null and `path` relative to their `root`, which is
recorded in the schema metadata.
"""
from __future__ import annotations

import argparse
import io
import zlib
from collections import Counter

import numpy as np
import polars as pl
from PIL import Image

from pipeline import io as pio
from pipeline import paths
from pipeline.config import DatasetCfg, load_params

SPLIT_ORDER = ("train", "val", "test", "query", "index")


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _frame(dataset: str, images: np.ndarray, labels: np.ndarray, class_names: list[str], splits: list[str],
           subset: str, captions: list[list[str]], label_offset: int = 0) -> pl.DataFrame:
    n = len(labels)
    return pl.DataFrame({
        "dataset": [dataset] * n,
        "split": splits,
        "subset": [subset] * n,
        "label": (np.asarray(labels, np.int64) + label_offset),
        "class_name": [class_names[i] for i in labels],
        "path": [f"{subset}/{i:06d}.png" for i in range(n)],
        "image": [png_bytes(img) for img in images],
        "captions": captions,
    }, schema_overrides={"image": pl.Binary, "captions": pl.List(pl.String)})


def embedded_glyphs(name: str, cfg: DatasetCfg) -> pl.DataFrame:
    """Fine-grained target: `n_classes` letters from `class_offset` of the fixed shuffle of all
    letters, class-disjoint train / val / test (METHOD §5)."""
    from pipeline.lib.worlds import embedded as world

    chosen = world.glyph_partition("letters", cfg.class_offset, cfg.n_classes)
    rendered = world.render_glyphs(chosen, per_class=cfg.per_class, seed=cfg.seed)
    return _frame(name, rendered.images, rendered.labels, rendered.class_names,
                  class_disjoint_splits(cfg, rendered.labels), "glyphs", rendered.captions)


def embedded_flags(name: str, cfg: DatasetCfg) -> pl.DataFrame:
    """Fine-grained target: `n_classes` flags (layout × ordered colours), class-disjoint train / val / test."""
    from pipeline.lib.worlds import embedded as world

    rendered = world.render_flags(world.flag_classes(cfg.n_classes, cfg.seed), per_class=cfg.per_class, seed=cfg.seed)
    return _frame(name, rendered.images, rendered.labels, rendered.class_names,
                  class_disjoint_splits(cfg, rendered.labels), "flags", rendered.captions)


def class_disjoint_splits(cfg: DatasetCfg, labels: np.ndarray) -> list[str]:
    """Split of each image when whole classes go to train / val / test (METHOD §5: open-set test)."""
    from pipeline.lib.worlds import embedded as world

    class_split = world.split_classes(cfg.n_classes, seed=cfg.seed, test_fraction=cfg.test_class_fraction,
                                      val_fraction_of_train=cfg.val_class_fraction)
    split_of_class = {int(c): s for s, classes in class_split.items() for c in classes}
    return [split_of_class[int(c)] for c in labels]


def subset_seed(seed: int, subset: str) -> int:
    """A seed per (dataset seed, subset name): adding or resizing one subset leaves the others' images alone."""
    return int(np.random.SeedSequence([seed, zlib.crc32(subset.encode())]).generate_state(1)[0])


def embedded_web(name: str, cfg: DatasetCfg) -> pl.DataFrame:
    """The embedded "web" the teacher pretrains on: named subsets (shapes, animals, patterns, letters,
    symbols), each split train / val / test as its options say. Labels are made unique across
    subsets by offsetting each subset's labels by the classes of the subsets before it."""
    from pipeline.lib.worlds import embedded as world

    frames, offset = [], 0
    for subset, options in cfg.subsets.items():
        built = world.build_web_subset(subset, dict(options), subset_seed(cfg.seed, subset))
        s = built.images
        frames.append(_frame(name, s.images, s.labels, s.class_names, built.splits, subset, s.captions,
                             label_offset=offset))
        offset += len(s.class_names)
    return pl.concat(frames)


BUILDERS = {"embedded_flags": embedded_flags, "embedded_glyphs": embedded_glyphs, "embedded_web": embedded_web}


def build_manifest(name: str, cfg: DatasetCfg) -> tuple[pl.DataFrame, dict]:
    """Dispatch on `source`; returns the manifest and metadata to store with it."""
    if cfg.source in BUILDERS:
        frame, meta = BUILDERS[cfg.source](name, cfg), {}
    else:
        from pipeline.sources import datasets as real  # real datasets and users' folders / CSVs
        frame, meta = real.build_manifest(name, cfg)
    frame = frame.with_row_index("id").with_columns(pl.col("id").cast(pl.Int64))
    return frame, meta


def describe(frame: pl.DataFrame) -> dict:
    """Counts per split (images, classes) for the stage log and the metadata."""
    out = {}
    for split in sorted(set(frame["split"]), key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99):
        part = frame.filter(pl.col("split") == split)
        out[split] = {"images": part.height, "classes": part["label"].n_unique(),
                      "subsets": dict(Counter(part["subset"]))}
    return out


def split_lists(frame: pl.DataFrame) -> dict[str, list[dict]]:
    """The exact split lists in the reference's info-file layout ([{"path", "class_id"}, ...] per
    split), stored with the manifest so results can be compared across machines and code versions
    (and fed back through `datasets.<name>.split_files`)."""
    return {split: part.select("path", pl.col("label").alias("class_id")).to_dicts()
            for (split,), part in frame.group_by("split", maintain_order=True)}


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    if args.dataset not in params.datasets:
        raise ValueError(f"unknown dataset '{args.dataset}': params.yaml defines {sorted(params.datasets)}")
    cfg = params.datasets[args.dataset]
    frame, meta = build_manifest(args.dataset, cfg)
    stats = describe(frame)
    with pio.atomic_path(paths.prepared(args.dataset), directory=True) as tmp:
        pio.write_parquet(frame, tmp / pio.MANIFEST, {"dataset": args.dataset, "source": cfg.source,
                                                       "splits": stats, **meta})
        for split, rows in split_lists(frame).items():
            pio.write_json(rows, tmp / "splits" / f"{split}.json")
    for split, s in stats.items():
        print(f"[prepare {args.dataset}] {split:>5}: {s['images']:6d} images, {s['classes']:4d} classes")
