"""The embedded world keeps its promise: what is called unseen is unreachable from fine-tuning.

Fine-tuning reads the target's train / val splits and the replay domain's train / val splits
(`roles.generic` within `roles.generic_subsets`), with their labels and class prompts. Nothing of an
unseen evaluation set (rows, pixels, labels, class names) may be among those inputs, and the
zero-shot classes must be classes no fine-tuning method names.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_params
from pipeline.stages.common import replay_frame, set_kind, split_frame
from tests.conftest import ROOT, clone, run


@pytest.fixture(scope="module")
def prepared(reproduced_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the reproduced tiny project (its prepared datasets from the shared DVC cache)."""
    return clone(reproduced_tiny, tmp_path_factory.mktemp("world") / "project", share_cache=True)


def embedded_params(tmp_path: Path):
    out = tmp_path / "params.yaml"
    run([sys.executable, "-m", "pipeline", "configure", "experiment=embedded", "--output", str(out)], ROOT)
    return load_params(out)


def test_the_default_world_has_replay_and_unseen_sets_and_zero_shot_only_on_unseen_classes(tmp_path: Path) -> None:
    params = embedded_params(tmp_path)
    ood = {name: set_kind(params, cfg) for name, cfg in params.eval.out_of_domain.items()}
    assert sorted(ood.values()).count("unseen") >= 2 and "replay" in ood.values(), ood
    text = {name: set_kind(params, cfg) for name, cfg in params.eval.image_text.items()}
    assert set(text.values()) == {"replay", "unseen"}, text   # image-text on both kinds, reported apart
    assert params.eval.zero_shot and all(set_kind(params, cfg) == "unseen" for cfg in params.eval.zero_shot.values())
    assert all(set_kind(params, cfg) == "target" for cfg in params.eval.in_domain.values())


def _digests(frame: pl.DataFrame) -> set[str]:
    return {hashlib.sha256(b).hexdigest() for b in frame["image"].to_list()}


@pytest.mark.slow
def test_nothing_of_an_unseen_set_is_a_fine_tuning_input(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(prepared)
    params = load_params("params.yaml")
    cols = ["id", "label", "class_name", "image"]
    inputs = {name: pl.concat([split_frame(params, params.roles.target, s, columns=cols) for s in ("train", "val")])
              .with_columns(pl.lit(params.roles.target).alias("dataset")) for name in ["target"]}
    inputs["replay"] = pl.concat([replay_frame(params, s, cols) for s in ("train", "val")]).with_columns(
        pl.lit(params.roles.generic).alias("dataset"))
    touched_rows = {(d, i) for f in inputs.values() for d, i in zip(f["dataset"], f["id"])}
    touched_pixels = set().union(*(_digests(f) for f in inputs.values()))
    touched_names = set().union(*(set(f["class_name"]) for f in inputs.values()))
    touched_labels = {(d, lab) for f in inputs.values() for d, lab in zip(f["dataset"], f["label"])}

    groups = {"out_of_domain": params.eval.out_of_domain, "image_text": params.eval.image_text,
              "zero_shot": params.eval.zero_shot}
    checked = 0
    for group, sets in groups.items():
        for name, cfg in sets.items():
            if set_kind(params, cfg) != "unseen":
                continue
            rows = split_frame(params, cfg.dataset, cfg.split, cfg.subset, cols)
            assert not {(cfg.dataset, i) for i in rows["id"]} & touched_rows, (group, name)
            assert not _digests(rows) & touched_pixels, (group, name)
            assert not {(cfg.dataset, lab) for lab in rows["label"]} & touched_labels, (group, name)
            if group == "zero_shot":
                assert not set(rows["class_name"]) & touched_names, (group, name)
            checked += 1
    assert checked >= 4  # two unseen image-image sets, image-text and zero-shot


@pytest.mark.slow
def test_replay_sets_are_the_replay_domain(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sets called replay share classes with what fine-tuning reads, and only those sets do."""
    monkeypatch.chdir(prepared)
    params = load_params("params.yaml")
    replay_labels = set(replay_frame(params, "train", ["label"])["label"])
    for name, cfg in params.eval.out_of_domain.items():
        labels = set(split_frame(params, cfg.dataset, cfg.split, cfg.subset, ["label"])["label"])
        overlap = bool(labels & replay_labels) and cfg.dataset == params.roles.generic
        assert overlap == (set_kind(params, cfg) == "replay"), name
