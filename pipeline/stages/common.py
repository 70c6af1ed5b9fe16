"""Helpers shared by the stages that need no torch: prepared splits, evaluation sets, stored embeddings.

Light stages (index, evaluate, neighbours, report) import only this, so they start in about a second;
loading and running encoders lives in `pipeline.stages.encoders`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from pipeline import io as pio
from pipeline import paths
from pipeline.config import EvalSetCfg, Params
from pipeline.lib.worlds.embedded.web import novel_of

TEACHER_SPEC = "teacher.json"


def split_frame(params: Params, dataset: str, split: str, subset: str | list[str] | None = None,
                columns: list[str] | None = None) -> pl.DataFrame:
    """Rows of one split (optionally of one subset, or of a list of subsets) of a prepared dataset, in
    manifest order."""
    wanted = None if columns is None else list(dict.fromkeys([*columns, "split", "subset"]))
    frame = pio.read_manifest(paths.prepared(dataset), wanted)
    frame = frame.filter(pl.col("split") == split)
    if subset is not None:
        frame = frame.filter(pl.col("subset").is_in([subset] if isinstance(subset, str) else list(subset)))
    if columns is not None:
        frame = frame.select(columns)
    if frame.height == 0:
        raise ValueError(f"dataset '{dataset}' has no rows in split '{split}'"
                         + (f" / subset '{subset}'" if subset else ""))
    return frame


def replay_subsets(params: Params) -> list[str] | None:
    """The subsets of `roles.generic` that are the replay domain: `roles.generic_subsets`, else every
    configured subset of an embedded web (never a `<subset>_novel` part: held-out categories), else
    None (every row of a real dataset)."""
    if params.roles.generic_subsets is not None:
        return list(params.roles.generic_subsets)
    generic = params.datasets[params.roles.generic]
    return list(generic.subsets) if generic.subsets else None


def replay_frame(params: Params, split: str, columns: list[str] | None = None) -> pl.DataFrame:
    """Rows of one split of the replay domain: `roles.generic`, restricted to `replay_subsets`.

    Everything a fine-tuning method may read of generic data (distillation images and their teacher
    features, class labels and prompts, the selection split) comes through here.
    """
    return split_frame(params, params.roles.generic, split, replay_subsets(params), columns)


def leading_share(frame: pl.DataFrame, fraction: float) -> pl.DataFrame:
    """The first `fraction` of the rows (at least one): the reference selects checkpoints on the
    first 10 % of its generic val records (`roles.generic_val_fraction`)."""
    return frame if fraction >= 1 else frame.head(max(1, math.ceil(fraction * frame.height)))


def image_sources(dataset: str, frame: pl.DataFrame) -> list[bytes | str]:
    """Packed bytes when the manifest has them, else files under the folder `prepare` found them in."""
    if "image" in frame.columns and frame["image"].null_count() == 0:
        return list(frame["image"].to_list())
    root = pio.parquet_metadata(paths.prepared(dataset) / pio.MANIFEST).get("root")
    if root is None:
        raise ValueError(f"dataset '{dataset}' has unpacked images but its manifest records no root folder: "
                         f"rerun `python -m pipeline prepare {dataset}`")
    return [str(Path(root) / p) for p in frame["path"].to_list()]


def eval_sets(params: Params) -> dict[str, tuple[str, EvalSetCfg]]:
    """Every image-image evaluation set: name → ('in' | 'out', config)."""
    out = {name: ("in", cfg) for name, cfg in params.eval.in_domain.items()}
    out.update({name: ("out", cfg) for name, cfg in params.eval.out_of_domain.items()})
    return out


SET_KINDS = ("target", "replay", "near", "far")


def set_kind(params: Params, cfg: EvalSetCfg) -> str:
    """What an evaluation set is to fine-tuning (docs/protocol.md):
    - 'target': the target dataset;
    - 'replay': data of the replay domain, which fine-tuning reads (`replay_subsets`); a set of the
      replay dataset that takes every subset counts as replay (part of it was touched);
    - 'near': held-out classes of a kind the replay covers: the `<subset>_novel` part of a replay
      subset, or a set declared `kind: near`;
    - 'far': a kind the replay never shows (any other set, unless declared near).
    No fine-tuning loss, selection rule, label or prompt touches a near or far set.
    """
    roles = params.roles
    if cfg.dataset == roles.target:
        return "target"
    if cfg.dataset == roles.generic:
        replay = replay_subsets(params)
        if replay is None or cfg.subset is None or cfg.subset in replay:
            return "replay"
        if novel_of(cfg.subset) in replay:
            return "near"
    return cfg.kind or "far"


def needed_splits(params: Params) -> list[tuple[str, str]]:
    """The (dataset, split) pairs any evaluation reads, in a stable order."""
    pairs: set[tuple[str, str]] = set()
    groups = [params.eval.in_domain, params.eval.out_of_domain, params.eval.image_text, params.eval.zero_shot]
    for group in groups:
        for cfg in group.values():
            pairs.add((cfg.dataset, cfg.split))
            if cfg.index_split:
                pairs.add((cfg.dataset, cfg.index_split))
    return sorted(pairs)


# (dataset, split) → (embeddings [N, D], table with id/label/subset): files of the `embed` stage,
# or in memory (WiSE-FT evaluates interpolated models without writing their embeddings)
EmbeddingLoader = Callable[[str, str], tuple[np.ndarray, pl.DataFrame]]


def stored_embeddings(method: str) -> EmbeddingLoader:
    """The `embed` stage's Parquet tables of one method."""
    return lambda dataset, split: pio.read_embeddings(paths.embeddings(method) / paths.split_file(dataset, split))


def select_rows(load: EmbeddingLoader, cfg: EvalSetCfg, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, labels, ids) of one evaluation set's split, its subset applied."""
    emb, table = load(cfg.dataset, split)
    if cfg.subset is not None:
        keep = (table["subset"] == cfg.subset).to_numpy()
        emb, table = emb[keep], table.filter(keep)
    return emb, table["label"].to_numpy(), table["id"].to_numpy()


def read_teacher_spec() -> dict[str, Any]:
    """What the `teacher` stage decided: an open_clip model spec (+ preprocessing)."""
    return pio.read_json(paths.teacher() / TEACHER_SPEC)


def spec_metadata(spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Provenance stored in every embedding table's schema."""
    return {"model": spec["model"], "pretrained": spec.get("pretrained"),
            "preprocess": {"eval": "shorter side -> centre crop", "size": spec["image_size"],
                           "mean": spec["mean"], "std": spec["std"]}, **extra}
