"""Stage `prepare <dataset>`: build one dataset's manifest with its splits.

Output `data/prepared/<dataset>/manifest.parquet`, one row per image:
id, dataset, split, subset, label, class_name, path, image (encoded bytes or null), captions.
Embedded datasets pack their tiny PNGs into the `image` column (`pipeline.sources.embedded`); real
datasets keep `image` null and `path` relative to their `root`, which is recorded in the schema
metadata. Which reader builds a dataset is its source's declaration (`pipeline.sources.registry`).
"""
from __future__ import annotations

import argparse
from collections import Counter

import polars as pl
from hydra.utils import get_method

from pipeline import io as pio
from pipeline import paths
from pipeline.config import DatasetCfg, load_params
from pipeline.sources import datasets as real  # real datasets and users' folders / CSVs
from pipeline.sources import embedded  # noqa: F401 - the embedded readers the registry names
from pipeline.sources.registry import SOURCES

SPLIT_ORDER = ("train", "val", "test", "query", "index")


def build_manifest(name: str, cfg: DatasetCfg) -> tuple[pl.DataFrame, dict]:
    """The source's reader (`pipeline.sources.registry`); returns the manifest and metadata to store with it."""
    source = SOURCES[cfg.source]
    if source.embedded:
        frame, meta = get_method(source.reader)(name, cfg)
    else:
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
