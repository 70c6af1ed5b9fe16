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
    """Fine-grained target: `n_classes` letters, class-disjoint train / val / test (METHOD §5)."""
    from pipeline.lib.worlds import embedded as world

    available = world.glyph_classes()
    if cfg.n_classes > len(available):
        raise ValueError(f"datasets.{name}.n_classes={cfg.n_classes} but only {len(available)} glyph "
                         "classes exist in the bundled fonts")
    rng = np.random.default_rng(cfg.seed)
    chosen = [available[i] for i in sorted(rng.choice(len(available), cfg.n_classes, replace=False))]
    rendered = world.render_glyphs(chosen, per_class=cfg.per_class, seed=cfg.seed)
    class_split = world.split_classes(cfg.n_classes, seed=cfg.seed, val_fraction_of_train=cfg.val_class_fraction)
    split_of_class = {int(c): s for s, classes in class_split.items() for c in classes}
    splits = [split_of_class[int(c)] for c in rendered.labels]
    return _frame(name, rendered.images, rendered.labels, rendered.class_names, splits, "glyphs", rendered.captions)


def embedded_web(name: str, cfg: DatasetCfg) -> pl.DataFrame:
    """Generic "web" data: captioned shape scenes + Animal-MNIST silhouettes, random (not
    class-disjoint) train / val / test like the reference's ImageNet 80/20 split."""
    from pipeline.lib.worlds import embedded as world

    n_shapes = sum(cfg.shapes.values())
    shapes = world.render_shapes(n_shapes, seed=cfg.seed)
    shape_splits = [s for s, n in cfg.shapes.items() for _ in range(n)]
    animals = world.load_animal_mnist()
    animal_split_idx = world.stratified_split(animals.labels, dict(cfg.animals), seed=cfg.seed)
    animal_splits = np.empty(len(animals.labels), dtype=object)
    for split, idx in animal_split_idx.items():
        animal_splits[idx] = split
    used = animal_splits != None  # noqa: E711 - fractions may sum to < 1: the rest is not used
    return pl.concat([
        _frame(name, shapes.images, shapes.labels, shapes.class_names, shape_splits, "shapes", shapes.captions),
        _frame(name, animals.images[used], animals.labels[used], animals.class_names, list(animal_splits[used]),
               "animals", [c for c, u in zip(animals.captions, used) if u], label_offset=len(shapes.class_names)),
    ])


BUILDERS = {"embedded_glyphs": embedded_glyphs, "embedded_web": embedded_web}


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
