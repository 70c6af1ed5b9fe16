"""The paper preset: offline it stops at the first dataset it cannot get, with what to do; given local
folders in the real datasets' own layouts and a local open_clip model, it runs end to end."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests import real_formats as rf
from tests.conftest import copy_project, run

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
PRESET = "experiment=paper_sop_siglip"


def committed_project(dest: Path, overrides: list[str]) -> Path:
    project = copy_project(dest)
    run([sys.executable, "-m", "pipeline", "configure", PRESET, *overrides], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "paper preset"], project)
    return project


def test_offline_the_paper_preset_stops_at_the_first_dataset_with_what_to_do(tmp_path: Path) -> None:
    project = committed_project(tmp_path / "offline", [])
    # the documented command: DVC composes the preset (Hydra) and runs; here nothing can be fetched
    out = run([str(BIN / "dvc"), "exp", "run", "-S", PRESET, "-S", "+datasets.sop.download_retries=0"], project,
              check=False)
    log = out.stdout + out.stderr
    assert out.returncode != 0
    assert ("cannot download ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip" in log
            and "Without network access" in log and "datasets.sop.root" in log) \
        or "does not exist. Get" in log, log[-3000:]
    assert not any((project / "data" / "prepared").glob("*/manifest.parquet"))


def test_the_paper_preset_runs_end_to_end_on_tiny_real_formats(tmp_path: Path) -> None:
    rf.make_all(tmp_path / "datasets")  # each under datasets/<name>/, in its release's own folder names
    model = rf.make_tiny_open_clip(tmp_path / "tiny_clip")
    names = ("sop", "imagenet", "cars", "inshop", "inat", "food2k", "flickr30k", "coco")
    overrides = [f"datasets.{name}.root={tmp_path / 'datasets' / name}" for name in names] + [
        f"teacher.model=local-dir:{model}", "teacher.pretrained=null",
        "runtime.threads=2", "runtime.num_workers=0", "features.batch_size=32", "roles.generic_val_fraction=0.5",
        "finetune.steps=4", "finetune.batch_size=8", "finetune.train_resize=36",
        "finetune.checkpoint_every=2", "fewshot.shots=[1]", "fewshot.repeats=1", "fewshot.settings.steps=5",
    ]
    project = committed_project(tmp_path / "paper", overrides)
    run([str(BIN / "dvc"), "repro"], project)
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    for method in ("naive", "infuse"):
        assert {"delta_in_domain", "delta_ood_image_image", "delta_ood_image_text"} <= set(metrics["summary"][method])
    infuse = json.loads((project / "data" / "eval" / "infuse.json").read_text())
    assert set(infuse["image_image"]) == {"sop", "cars", "inshop", "inat", "food2k", "imagenet"}
    assert infuse["image_image"]["inshop"]["queries"] == 8  # query vs a separate gallery
    assert set(infuse["image_text"]) == {"flickr30k", "coco"} and set(infuse["zero_shot"]) == {"imagenet"}
    splits = json.loads((project / "data" / "prepared" / "sop" / "splits" / "val.json").read_text())
    assert splits and set(splits[0]) == {"path", "class_id"}
    teacher = json.loads((project / "reports" / "teacher.json").read_text())
    assert teacher["model"] == f"local-dir:{model}"
