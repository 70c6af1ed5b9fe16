"""The embedded world keeps its promise (docs/protocol.md): near- and far-unseen sets are unreachable
from fine-tuning.

Statically: the default world has replay, near and far sets of each kind of evaluation, from enough
sources. Dynamically, by invariance: with the teacher fixed, scrambling every near and far row
(pixels, labels, class names, captions) leaves every fine-tuning output bit-identical (checkpoints,
train.json, tuning criteria, replay features and prompts); the same check fails when a far subset is
put into the replay, so the invariance is not vacuous.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipeline import io as pio
from pipeline.config import load_params
from pipeline.lib.worlds.embedded.web import novel_of
from pipeline.stages.common import replay_subsets, set_kind
from tests.conftest import ROOT, clone, run

# one method per way of reading the replay: its teacher features (infuse), the frozen teacher online
# (infuse_online), its class prompts on target images (lwf), its labels and prompts for a Fisher (ewc),
# its labels per batch (gift)
METHODS = ("infuse", "infuse_online", "lwf", "ewc", "gift")
REPLAY_FILES = ("web__train__images.parquet", "web__val__images.parquet", "web__train__prompts.parquet")


def embedded_params(tmp_path: Path):
    out = tmp_path / "params.yaml"
    run([sys.executable, "-m", "pipeline", "configure", "experiment=embedded", "--output", str(out)], ROOT)
    return load_params(out)


def test_the_default_world_has_replay_near_and_far_sets_of_every_kind(tmp_path: Path) -> None:
    params = embedded_params(tmp_path)
    kinds = {group: {name: set_kind(params, cfg) for name, cfg in getattr(params.eval, group).items()}
             for group in ("out_of_domain", "image_text", "zero_shot")}
    ii = kinds["out_of_domain"]
    unseen = [n for n, k in ii.items() if k in ("near", "far")]
    sources = {novel_of(params.eval.out_of_domain[n].subset) or params.eval.out_of_domain[n].subset for n in unseen}
    assert len(unseen) >= 4 and len(sources) >= 3 and {"replay", "near", "far"} <= set(ii.values()), ii
    assert {"replay", "near", "far"} <= set(kinds["image_text"].values())
    assert set(kinds["zero_shot"].values()) == {"near", "far"}  # zero-shot only on classes no input names
    assert all(set_kind(params, cfg) == "target" for cfg in params.eval.in_domain.values())
    assert "animals" not in replay_subsets(params) and all(novel_of(s) is None for s in replay_subsets(params))


# ------------------------------------------------------------------------------ invariance
def unseen_subsets(project: Path, params) -> list[str]:
    manifest = pio.read_manifest(project / "data" / "prepared" / params.roles.generic, ["subset"])
    return sorted(set(manifest["subset"]) - set(replay_subsets(params)))


def scramble_unseen(project: Path, params) -> int:
    """Noise pixels, permuted labels, random class names and captions for every row of every near and far
    subset (every split); ids, counts and everything else stay. Returns the rows scrambled."""
    folder = project / "data" / "prepared" / params.roles.generic
    meta = pio.parquet_metadata(folder / pio.MANIFEST)
    frame = pio.read_manifest(folder)
    unseen = frame["subset"].is_in(unseen_subsets(project, params)).to_numpy()
    rng = np.random.default_rng(0)
    rows = np.flatnonzero(unseen)

    def noise_png(raw: bytes) -> bytes:
        size = Image.open(io.BytesIO(raw)).size
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(out, format="PNG")
        return out.getvalue()

    images, labels, names, captions = (frame[c].to_list() for c in ("image", "label", "class_name", "captions"))
    permuted = rng.permutation([labels[i] for i in rows])
    for j, i in enumerate(rows):
        images[i], labels[i] = noise_png(images[i]), int(permuted[j])
        names[i], captions[i] = f"thing {rng.integers(1e9)}", [f"words {rng.integers(1e9)}"]
    frame = frame.with_columns(pl.Series("image", images, pl.Binary), pl.Series("label", labels, pl.Int64),
                               pl.Series("class_name", names), pl.Series("captions", captions, pl.List(pl.String)))
    pio.write_parquet(frame, folder / pio.MANIFEST, meta)
    return len(rows)


def fine_tuning_outputs(project: Path, overrides: list[str], methods: tuple[str, ...] = METHODS,
                        tune: bool = True) -> dict[str, str]:
    """features, the methods' fine-tunes and a tune, then a digest of everything fine-tuning produced."""
    py = [sys.executable, "-m", "pipeline"]
    run([*py, "configure", "--reset", *overrides], project)
    run([*py, "features"], project)
    for method in methods:
        run([*py, "finetune", method], project)
    if tune:
        run([*py, "tune", "infuse_distill"], project)
    out = {f: hashlib.sha256((project / "data/features" / f).read_bytes()).hexdigest() for f in REPLAY_FILES}
    for method in methods:
        run_dir = project / "data" / "runs" / method
        out[f"{method}/visual.pt"] = hashlib.sha256((run_dir / "visual.pt").read_bytes()).hexdigest()
        record = json.loads((run_dir / "train.json").read_text())
        record.pop("seconds")  # wall-clock time: the one thing allowed to differ
        out[f"{method}/train.json"] = json.dumps(record, sort_keys=True)
    if tune:
        tuning = json.loads((project / "reports" / "tuning.json").read_text())
        out["tuning"] = json.dumps({d: r["criterion"] for d, r in tuning["runs"].items()}, sort_keys=True)
    return out


@pytest.fixture(scope="module")
def twins(reproduced_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two clones of the reproduced tiny project (same teacher); the second's near and far rows scrambled."""
    base = tmp_path_factory.mktemp("invariance")
    plain = clone(reproduced_tiny, base / "plain", share_cache=True)
    scrambled = clone(reproduced_tiny, base / "scrambled", share_cache=True)
    assert scramble_unseen(scrambled, load_params(scrambled / "params.yaml")) > 0
    return plain, scrambled


@pytest.mark.slow
def test_scrambling_every_unseen_row_changes_no_fine_tuning_output(twins: tuple[Path, Path]) -> None:
    overrides = ["experiment=tiny", "suite=compare", "methods.lwf.lp_max_steps=3",
                 "tuning.infuse_distill.knobs.lambda_distill.values=[0.0,50.0,500.0]"]
    plain, scrambled = (fine_tuning_outputs(p, overrides) for p in twins)
    assert plain == scrambled


@pytest.mark.slow
def test_the_invariance_fails_when_an_unseen_subset_is_replayed(twins: tuple[Path, Path]) -> None:
    overrides = ["experiment=tiny", "roles.generic_subsets=[shapes,patterns,symbols,animals]"]
    plain, scrambled = (fine_tuning_outputs(p, overrides, ("infuse",), tune=False) for p in twins)
    differs = {k for k in plain if plain[k] != scrambled[k]}
    assert {"web__train__images.parquet", "infuse/visual.pt"} <= differs
