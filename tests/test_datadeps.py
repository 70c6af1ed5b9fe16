"""A change to a dataset's files reruns its `prepare`, and only a change does: adding, removing,
editing or moving an image between classes (a folder, a csv and its images, SOP's own layout, a
split_files folder) changes the dataset's fingerprint; touching a file does not. First on the
fingerprint itself, then with real DVC and Snakemake on one tiny project shared by every case."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import polars as pl
import pytest

from pipeline.sources.fingerprint import fingerprint
from tests import real_formats as rf
from tests.conftest import copy_project, run

BIN = Path(sys.executable).parent
CHANGES = ("add", "remove", "content", "move", "touch")


# ------------------------------------------------------------------------------ three kinds of data
def make_folder(root: Path) -> Path:
    """<root>/<class>/<class>_<i>.png: 6 classes of 3 images (file names unique across classes)."""
    for c in range(6):
        for i in range(3):
            rf.image(root / f"class_{c}" / f"{c}_{i}.png", c, fmt="PNG")
    return root


def make_csv(root: Path) -> Path:
    """A flat folder of images and list.csv (path,label) naming them."""
    rows = ["path,label"]
    for c in range(6):
        for i in range(3):
            rf.image(root / "images" / f"{c}_{i}.png", 50 + c, fmt="PNG")
            rows.append(f"images/{c}_{i}.png,kind_{c}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    return root


def make_split_files(folder: Path) -> Path:
    """The reference's info files for a tiny SOP copy: classes 1-2 train, 6-7 test."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, classes in (("train", (1, 2)), ("test", (6, 7))):
        rows = [{"path": f"bicycle_final/{c:06d}_{i}.JPG", "class_id": [c]} for c in classes for i in range(4)]
        (folder / f"{split}.json").write_text(json.dumps(rows))
    return folder


def _touch(*files: Path) -> None:
    for f in files:
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def _rewrite_lines(path: Path, edit) -> None:
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")


def change_folder(root: Path, change: str) -> None:
    if change == "add":
        rf.image(root / "class_0" / "0_new.png", 7, fmt="PNG")
    elif change == "remove":
        (root / "class_1" / "1_0.png").unlink()
    elif change == "content":
        rf.image(root / "class_2" / "2_1.png", 99, fmt="PNG")
    elif change == "move":
        shutil.move(root / "class_3" / "3_2.png", root / "class_4" / "3_2.png")
    else:
        _touch(root / "class_5" / "5_0.png")


def change_csv(root: Path, change: str) -> None:
    csv = root / "list.csv"
    if change == "add":
        rf.image(root / "images" / "0_new.png", 8, fmt="PNG")
        _rewrite_lines(csv, lambda lines: [*lines, "images/0_new.png,kind_0"])
    elif change == "remove":
        _rewrite_lines(csv, lambda lines: [ln for ln in lines if not ln.startswith("images/1_0.png,")])
        (root / "images" / "1_0.png").unlink()
    elif change == "content":
        rf.image(root / "images" / "2_1.png", 98, fmt="PNG")
    elif change == "move":  # the same image, labelled with another class
        _rewrite_lines(csv, lambda lines: [ln.replace("images/3_2.png,kind_3", "images/3_2.png,kind_4")
                                           for ln in lines])
    else:
        _touch(root / "images" / "5_0.png", csv)


def change_sop(root: Path, change: str) -> None:
    top = root / "Stanford_Online_Products"
    train = top / "Ebay_train.txt"
    if change == "add":
        rf.image(top / "bicycle_final" / "000003_9.JPG", 3)
        _rewrite_lines(train, lambda lines: [*lines, f"{len(lines)} 3 1 bicycle_final/000003_9.JPG"])
    elif change == "remove":
        _rewrite_lines(train, lambda lines: [ln for ln in lines if not ln.endswith("/000004_0.JPG")])
        (top / "bicycle_final" / "000004_0.JPG").unlink()
    elif change == "content":
        rf.image(top / "bicycle_final" / "000002_1.JPG", 97)
    elif change == "move":  # an image of product 5 now belongs to product 4
        _rewrite_lines(train, lambda lines: [re.sub(r" 5 1 (bicycle_final/000005_3\.JPG)$", r" 4 1 \1", ln)
                                             for ln in lines])
    else:
        _touch(top / "bicycle_final" / "000001_0.JPG", train)


KINDS = {  # dataset → (params, how to make its files, how to change them)
    "mine": ({"source": "folder"}, make_folder, change_folder),
    "listed": ({"source": "csv", "annotations": "list.csv"}, make_csv, change_csv),
    "sop": ({"source": "sop"}, rf.make_sop, change_sop),
}


def make_data(data: Path) -> dict[str, dict]:
    """The files of the three kinds, and an SOP copy of its own with split_files; their params."""
    cfgs = {}
    for name, (cfg, make, _) in KINDS.items():
        make(data / name)
        cfgs[name] = {**cfg, "root": str(data / name)}
    rf.make_sop(data / "sop_copy")
    make_split_files(data / "lists")
    cfgs["sop_lists"] = {"source": "sop", "root": str(data / "sop_copy"), "split_files": str(data / "lists")}
    return cfgs


# ------------------------------------------------------------------------------ the fingerprint alone
def doc_and_read(name: str, cfg: dict, stats: Path) -> tuple[dict, int]:
    found = fingerprint(name, cfg, stats)
    return found.doc, found.read


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("name", list(KINDS))
def test_a_change_moves_the_fingerprint_and_a_touch_does_not(name: str, change: str, tmp_path: Path) -> None:
    cfg = make_data(tmp_path / "data")[name]
    stats = tmp_path / "stats.json"
    before, read = doc_and_read(name, cfg, stats)
    assert read > 0 and before["inputs"]
    assert doc_and_read(name, cfg, stats) == (before, 0)  # nothing moved: no file is read
    KINDS[name][2](tmp_path / "data" / name, change)
    after, read = doc_and_read(name, cfg, stats)
    assert (after == before) == (change == "touch"), (before, after)
    assert read <= 2  # only the touched, changed or moved files are hashed again
    assert doc_and_read(name, cfg, stats) == (after, 0)


def test_a_csv_depends_on_the_images_it_lists_not_on_the_rest_of_its_folder(tmp_path: Path) -> None:
    cfg = make_data(tmp_path / "data")["listed"]
    before, _ = doc_and_read("listed", cfg, tmp_path / "stats.json")
    assert set(before["inputs"]) == {"annotations", "images"} and before["inputs"]["images"]["files"] == 18
    rf.image(tmp_path / "data" / "listed" / "images" / "unlisted.png", 3, fmt="PNG")
    assert doc_and_read("listed", cfg, tmp_path / "stats.json")[0] == before


def test_split_files_are_an_input_of_their_own(tmp_path: Path) -> None:
    cfg = make_data(tmp_path / "data")["sop_lists"]
    before, _ = doc_and_read("sop_lists", cfg, tmp_path / "stats.json")
    assert set(before["inputs"]) == {"root", "split_files"} and before["inputs"]["split_files"]["files"] == 2
    train = tmp_path / "data" / "lists" / "train.json"
    rows = json.loads(train.read_text())
    rows[0]["class_id"] = [2]  # an image moved to another class in the given split
    train.write_text(json.dumps(rows))
    after, _ = doc_and_read("sop_lists", cfg, tmp_path / "stats.json")
    assert after["inputs"]["root"] == before["inputs"]["root"]
    assert after["inputs"]["split_files"] != before["inputs"]["split_files"]


def test_embedded_datasets_and_downloads_read_no_files(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    assert doc_and_read("flags", {"source": "embedded_flags", "n_classes": 20}, stats) == \
        ({"dataset": "flags", "inputs": {}}, 0)
    fetched = {"source": "cars196", "downloads": [{"url": "http://example.invalid/car_ims.tgz"}]}
    assert doc_and_read("cars", fetched, stats) == ({"dataset": "cars", "inputs": {}}, 0)  # pinned by its params
    assert not stats.exists()


def test_a_csv_without_its_file_named_is_watched_as_a_folder(tmp_path: Path) -> None:
    cfg = make_data(tmp_path / "data")["listed"]
    doc, _ = doc_and_read("listed", {"source": "csv", "root": cfg["root"]}, tmp_path / "stats.json")
    assert set(doc["inputs"]) == {"root"} and doc["inputs"]["root"]["files"] == 19  # prepare names the key


def test_an_absent_root_keeps_the_last_fingerprint_or_says_it_is_absent(tmp_path: Path) -> None:
    cfg = make_data(tmp_path / "data")["mine"]
    known = fingerprint("mine", cfg, tmp_path / "stats.json")
    shutil.move(tmp_path / "data" / "mine", tmp_path / "elsewhere")  # a share that is not mounted
    kept = fingerprint("mine", cfg, tmp_path / "stats.json", previous=known.doc)
    assert kept.doc == known.doc and kept.absent == [Path(cfg["root"])]
    first = fingerprint("mine", cfg, tmp_path / "other_stats.json")  # nothing to keep: prepare reruns and explains
    assert first.doc["inputs"]["root"] == {"path": cfg["root"], "exists": False}


def test_a_damaged_stats_file_costs_a_rehash_not_a_wrong_answer(tmp_path: Path) -> None:
    cfg = make_data(tmp_path / "data")["mine"]
    stats = tmp_path / "stats.json"
    before, read = doc_and_read("mine", cfg, stats)
    header = stats.read_text().splitlines()[0]
    stats.write_text(header.replace('"listing": "', '"listing": "x') + "\n{not json\n")
    assert doc_and_read("mine", cfg, stats) == (before, read)


# ------------------------------------------------------------------------------ real DVC and Snakemake
FINGERPRINT = "fingerprint/dvc.yaml:fingerprint"  # the stage's address (a dvc.yaml of its own)
TARGETS = ("prepare@flags", "prepare@mine", "prepare@listed", "prepare@sop", "prepare@sop_lists")


@pytest.fixture(scope="module")
def data_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny project with the four datasets added (as a user adds them); only the prepare stages
    are reproduced, nothing downstream: (project, the folder holding the datasets' files)."""
    base = tmp_path_factory.mktemp("datadeps")
    data = base / "data"
    cfgs = make_data(data)
    project = copy_project(base / "project")
    overrides = [f"+datasets.{name}.{key}={value}" for name, cfg in cfgs.items() for key, value in cfg.items()]
    run([sys.executable, "-m", "pipeline", "configure", "experiment=tiny", *overrides], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "own data"], project)
    assert ran(repro(project)) == {FINGERPRINT, *TARGETS}
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "prepared"], project)
    return project, data


def repro(project: Path) -> str:
    return run([str(BIN / "dvc"), "repro", *TARGETS], project).stdout


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def manifest(project: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(project / "data" / "prepared" / name / "manifest.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("change", CHANGES)
def test_dvc_reruns_prepare_of_each_changed_dataset_and_nothing_on_a_touch(
        data_project: tuple[Path, Path], change: str) -> None:
    project, data = data_project
    before = {name: manifest(project, name) for name in KINDS}
    for name, (_, _, apply) in KINDS.items():
        apply(data / name, change)
    out = repro(project)
    changed = set() if change == "touch" else {f"prepare@{name}" for name in KINDS}
    assert ran(out) == {FINGERPRINT, *changed}, out  # never prepare@flags: embedded data read no files
    after = {name: manifest(project, name) for name in KINDS}
    rows = {"add": 1, "remove": -1}.get(change, 0)
    assert all(after[n].height == before[n].height + rows for n in KINDS), (before, after)
    if change == "move":  # the manifests say the new class, not the old one
        assert after["mine"].filter(pl.col("path") == "class_4/3_2.png")["class_name"].to_list() == ["class 4"]
        assert after["listed"].filter(pl.col("path") == "images/3_2.png")["class_name"].to_list() == ["kind 4"]
        assert after["sop"].filter(pl.col("path") == "bicycle_final/000005_3.JPG")["label"].to_list() == [4]


@pytest.mark.slow
def test_dvc_reruns_only_the_dataset_whose_files_changed(data_project: tuple[Path, Path]) -> None:
    project, data = data_project
    train = data / "lists" / "train.json"
    rows = json.loads(train.read_text())
    rows[0]["class_id"] = [2]  # a split_files change: an image of product 1 listed as product 2
    train.write_text(json.dumps(rows))
    assert ran(repro(project)) == {FINGERPRINT, "prepare@sop_lists"}
    moved = manifest(project, "sop_lists").filter(pl.col("path") == rows[0]["path"])
    assert moved["label"].to_list() == [2]


@pytest.mark.slow
def test_snakemake_reruns_prepare_of_a_changed_dataset_and_nothing_on_a_touch(
        data_project: tuple[Path, Path]) -> None:
    project, data = data_project
    targets = [f"data/prepared/{t.split('@')[1]}" for t in TARGETS]

    def snakemake() -> set[str]:
        out = run([str(BIN / "snakemake"), "--cores", "1", *targets], project)
        return set(re.findall(r"^(?:local)?rule (\w+):$", out.stdout + out.stderr, re.M))

    assert snakemake() == set()  # DVC made these outputs from the same files: nothing to do
    change_folder(data / "mine", "touch")
    change_sop(data / "sop", "touch")
    assert snakemake() == set()
    rf.image(data / "listed" / "images" / "2_2.png", 555, fmt="PNG")  # new bytes in a listed image
    assert snakemake() == {"prepare__listed"}
    shutil.move(data / "mine" / "class_0" / "0_1.png", data / "mine" / "class_1" / "0_1.png")
    assert snakemake() == {"prepare__mine"}
