"""Readers of the real datasets' own layouts (docs/paper-setting.md), and of users' folders and CSVs.

Each reader takes the folder the dataset was extracted to (or that the user points at), and as
keywords the dataset's `annotations` file and `seed` (a reader ignores what it does not use), and
returns a `Listing`: the folder images are relative to, and one row per image with
`path, label, class_name, split, captions`. `split` is the dataset's own split (`train`, `test`,
InShop's `query` / `index`, Karpathy's `train` / `val` / `test`); the class-disjoint validation
split (docs/method.md#views-and-splits) is carved out afterwards (`pipeline.sources.datasets`), the same way for all.

Readers locate their annotation files anywhere up to a few levels below the given folder, so the
archive's own top folder (`Stanford_Online_Products/`, `In-shop Clothes Retrieval Benchmark/`, ...)
may or may not be part of the path the user gives.
"""
from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import polars as pl

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_DEPTH = 4


@dataclass
class Listing:
    base: Path              # image paths are relative to this folder
    frame: pl.DataFrame     # path, label, class_name, split, captions


class FormatError(ValueError):
    """The folder is not laid out as the dataset's format expects; the message says what is missing."""


def listing_frame(paths: list[str], labels: list[int], class_names: list[str], splits: list[str],
                  captions: list[list[str]] | None = None) -> pl.DataFrame:
    """The common row layout of every reader."""
    return pl.DataFrame({
        "path": paths, "label": labels, "class_name": class_names, "split": splits,
        "captions": captions if captions is not None else [[] for _ in paths],
    }, schema={"path": pl.String, "label": pl.Int64, "class_name": pl.String, "split": pl.String,
               "captions": pl.List(pl.String)})


def _walk(root: Path, max_depth: int = MAX_DEPTH) -> Iterable[tuple[Path, list[str], list[str]]]:
    root_depth = len(root.parts)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()
        if len(here.parts) - root_depth >= max_depth:
            dirs[:] = []
        yield here, dirs, files


def find_file(root: Path, name: str, what: str) -> Path:
    """The first file called `name` at most MAX_DEPTH levels below `root`."""
    for folder, _, files in _walk(root):
        if name in files:
            return folder / name
    raise FormatError(f"no {name} under {root}: is this the {what} folder? ({name} is part of its release)")


def find_base(root: Path, rel_path: str, near: Path | None = None) -> Path:
    """The folder that `rel_path` (an image path from an annotation file) is relative to."""
    candidates = [near, near.parent] if near is not None else []
    candidates += [root] + [folder for folder, _, _ in _walk(root)]
    for folder in candidates:
        if folder is not None and (folder / rel_path).is_file():
            return folder
    raise FormatError(f"image {rel_path} (listed in the annotations) is not under {root} or its sub-folders: "
                      "extract the images next to the annotation files")


def _read_table(path: Path, skip_rows: int = 0, has_header: bool = True) -> pl.DataFrame:
    """Whitespace-separated text table (the metric-learning datasets' annotation files)."""
    lines = [ln.split() for ln in path.read_text().splitlines()[skip_rows:] if ln.strip()]
    if not lines:
        raise FormatError(f"{path} is empty")
    header, rows = (lines[0], lines[1:]) if has_header else ([f"column_{i}" for i in range(len(lines[0]))], lines)
    bad = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise FormatError(f"{path}: line {bad[0] + skip_rows + 1 + has_header} has {len(rows[bad[0]])} fields, "
                          f"expected {len(header)} ({' '.join(header)})")
    return pl.DataFrame(rows, schema=header, orient="row")


# ------------------------------------------------------------------------------ fine-grained targets
def read_sop(root: Path, **_: object) -> Listing:
    """Stanford Online Products: Ebay_train.txt / Ebay_test.txt (image_id class_id super_class_id path)."""
    train_file = find_file(root, "Ebay_train.txt", "Stanford_Online_Products")
    parts = []
    for split, name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        table = _read_table(train_file.parent / name)
        parts.append(table.with_columns(pl.lit(split).alias("split")))
    table = pl.concat(parts)
    base = find_base(root, table["path"][0], train_file.parent)
    labels = table["class_id"].cast(pl.Int64).to_list()
    supers = [p.split("/")[0].removesuffix("_final") for p in table["path"].to_list()]
    names = [f"{s} product {c}" for s, c in zip(supers, labels)]
    return Listing(base, listing_frame(table["path"].to_list(), labels, names, table["split"].to_list()))


def read_cars196(root: Path, **_: object) -> Listing:
    """Cars196: cars_annos.mat + car_ims/. Metric-learning split: classes 1-98 train, 99-196 test."""
    from scipy.io import loadmat

    mat_file = find_file(root, "cars_annos.mat", "Stanford Cars (car_ims + cars_annos.mat)")
    mat = loadmat(str(mat_file), squeeze_me=True)
    ann = mat["annotations"]
    paths = [str(p) for p in ann["relative_im_path"]]
    labels = [int(c) for c in ann["class"]]
    names = [str(n) for n in mat["class_names"]]
    splits = ["train" if c <= 98 else "test" for c in labels]
    base = find_base(root, paths[0], mat_file.parent)
    return Listing(base, listing_frame(paths, labels, [names[c - 1] for c in labels], splits))


def read_inshop(root: Path, **_: object) -> Listing:
    """In-Shop Clothes: list_eval_partition.txt (count line, header, image_name item_id evaluation_status)."""
    part_file = find_file(root, "list_eval_partition.txt", "DeepFashion In-shop Clothes Retrieval Benchmark")
    table = _read_table(part_file, skip_rows=1)
    status = {"train": "train", "query": "query", "gallery": "index"}
    unknown = set(table["evaluation_status"]) - set(status)
    if unknown:
        raise FormatError(f"{part_file}: unknown evaluation_status {sorted(unknown)}")
    base = find_base(root, table["image_name"][0], part_file.parent)
    items = table["item_id"].to_list()
    labels = [int(re.sub(r"\D", "", i)) for i in items]
    return Listing(base, listing_frame(table["image_name"].to_list(), labels, [f"clothing item {i}" for i in items],
                                       [status[s] for s in table["evaluation_status"].to_list()]))


def read_inat2018(root: Path, **_: object) -> Listing:
    """iNaturalist 2018, the metric-learning split of Brown et al. (Smooth-AP): Inaturalist_{train,test}_set1.txt
    list image paths `train_val2018/<kingdom>/<category>/<file>.jpg`; the category folder is the class."""
    train_file = find_file(root, "Inaturalist_train_set1.txt", "iNaturalist 2018 (+ Smooth-AP split files)")
    names = {}
    categories = next((folder / "categories.json" for folder, _, files in _walk(root) if "categories.json" in files),
                      None)
    if categories is not None:
        names = {int(c["id"]): c["name"] for c in json.loads(categories.read_text())}
    paths, labels, class_names, splits = [], [], [], []
    for split, name in (("train", "Inaturalist_train_set1.txt"), ("test", "Inaturalist_test_set1.txt")):
        for line in (train_file.parent / name).read_text().splitlines():
            if not line.strip():
                continue
            path = line.split()[0]
            kingdom, category = path.split("/")[-3:-1]
            paths.append(path)
            labels.append(int(category))
            class_names.append(names.get(int(category), f"{kingdom} species {category}"))
            splits.append(split)
    base = find_base(root, paths[0], train_file.parent)
    return Listing(base, listing_frame(paths, labels, class_names, splits))


def _class_folders(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _parse_names(path: Path | None) -> dict[str, str]:
    """`<id>--<name>`, `<id>\\t<name>` or `<id> <name>` per line → {id: name}."""
    if path is None:
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        separator = next((s for s in ("--", "\t", " ") if s in line), None)
        key, _, name = line.partition(separator) if separator else (line, "", "")
        if key:
            out[key.strip()] = name.strip() or key.strip()
    return out


def read_food2k(root: Path, **_: object) -> Listing:
    """Food2K: class folders `<id>/` of images (Food2k_complete/), optional food2k_label2name_en.txt names.
    Food2K's own split is for classification; the retrieval split (class-disjoint) comes from
    `split_files` (the reference's info JSONs) or is made by `pipeline.sources.datasets`."""
    top = next((folder for folder, dirs, _ in _walk(root) if len(dirs) > 1 and all(d.isdigit() for d in dirs)), None)
    if top is None:
        raise FormatError(f"no folder of numbered class folders under {root}: is this Food2k_complete?")
    label_file = next((folder / f for folder, _, files in _walk(root) for f in files
                       if f.startswith("food2k_label2name") and f.endswith(".txt")), None)
    names = _parse_names(label_file)
    paths, labels, class_names = [], [], []
    for cls in _class_folders(top):
        for img in _images_in(cls):
            paths.append(img.relative_to(top).as_posix())
            labels.append(int(cls.name))
            class_names.append(names.get(cls.name, f"food dish {cls.name}"))
    return Listing(top, listing_frame(paths, labels, class_names, ["all"] * len(paths)))


# ------------------------------------------------------------------------------ generic: ImageNet
def read_imagenet(root: Path, seed: int = 42, train_fraction: float = 0.8, **_: object) -> Listing:
    """ImageNet-1k: train/<wnid>/*.JPEG and val as val/<wnid>/*.JPEG or flat + LOC_val_solution.csv.

    As the reference (`our_imagenet_split`): the train list is shuffled with random.seed(42); the
    first 80 % is `train` (distillation), the rest `val` (checkpoint selection); the official val
    set is `test` (the coarse out-of-domain set). Class names from LOC_synset_mapping.txt if present.
    """
    train_dir = next((folder / "train" for folder, dirs, _ in _walk(root) if "train" in dirs
                      and any(d.startswith("n") for d in os.listdir(folder / "train")[:50])), None)
    if train_dir is None:
        raise FormatError(f"no train/<wnid>/ folders under {root}: is this ImageNet (ILSVRC2012)?")
    base = train_dir.parent
    wnids = [d.name for d in _class_folders(train_dir)]
    label_of = {w: i for i, w in enumerate(wnids)}
    mapping = next((folder / "LOC_synset_mapping.txt" for folder, _, files in _walk(root)
                    if "LOC_synset_mapping.txt" in files), None)
    names = {k: v.split(",")[0].strip() for k, v in _parse_names(mapping).items()}
    train = [p.relative_to(base).as_posix() for w in wnids for p in _images_in(train_dir / w)]
    random.Random(seed).shuffle(train)  # sorted listing → the same order on every machine
    cut = int(round(train_fraction * len(train)))
    val_dir = base / "val"
    if not val_dir.is_dir():
        raise FormatError(f"no val/ folder next to {train_dir}")
    if any(d.is_dir() for d in val_dir.iterdir()):
        test = [(p.relative_to(base).as_posix(), p.parent.name) for p in _images_in(val_dir)]
    else:
        solution = find_file(root, "LOC_val_solution.csv", "ImageNet (flat val/ needs LOC_val_solution.csv)")
        sol = pl.read_csv(solution)
        wnid_of = dict(zip(sol["ImageId"].to_list(), [s.split()[0] for s in sol["PredictionString"].to_list()]))
        test = [(p.relative_to(base).as_posix(), wnid_of[p.stem]) for p in _images_in(val_dir) if p.stem in wnid_of]
    paths = train + [p for p, _ in test]
    wnid = [p.split("/")[1] for p in train] + [w for _, w in test]
    splits = ["train"] * cut + ["val"] * (len(train) - cut) + ["test"] * len(test)
    return Listing(base, listing_frame(paths, [label_of[w] for w in wnid], [names.get(w, w) for w in wnid], splits))


# ------------------------------------------------------------------------------ image-text: Karpathy splits
def read_karpathy(root: Path, annotations: str, **_: object) -> Listing:
    """Flickr30k / MS-COCO with Karpathy's split file (dataset_flickr30k.json / dataset_coco.json):
    each image is its own class; `restval` joins `train`; captions are the `raw` sentences."""
    ann_file = find_file(root, annotations, f"Karpathy captions ({annotations} from caption_datasets.zip)")
    images = json.loads(ann_file.read_text())["images"]
    rel = [f"{im['filepath']}/{im['filename']}" if im.get("filepath") else im["filename"] for im in images]
    base = next((b for b in (find_base_or_none(root, rel[0]), find_base_or_none(root, Path(rel[0]).name))
                 if b is not None), None)
    if base is None:
        raise FormatError(f"image {rel[0]} (listed in {ann_file.name}) is not under {root}")
    if not (base / rel[0]).is_file():  # images sit flat (flickr30k-images/<file>), not under their filepath
        rel = [Path(r).name for r in rel]
    splits = [{"restval": "train"}.get(im["split"], im["split"]) for im in images]
    captions = [[s["raw"].strip() for s in im["sentences"]] for im in images]
    ids = list(range(len(images)))
    return Listing(base, listing_frame(rel, ids, [f"image {i}" for i in ids], splits, captions))


def find_base_or_none(root: Path, rel_path: str) -> Path | None:
    try:
        return find_base(root, rel_path)
    except FormatError:
        return None


# ------------------------------------------------------------------------------ the user's own data
def read_folder(root: Path, **_: object) -> Listing:
    """`root/<class>/<images>` (classes split later), or `root/{train,val,test}/<class>/<images>`."""
    if not root.is_dir():
        raise FormatError(f"{root} is not a folder")
    split_dirs = [d for d in ("train", "val", "test", "query", "index") if (root / d).is_dir()]
    layout = [(s, root / s) for s in split_dirs] if split_dirs else [("all", root)]
    class_ids: dict[str, int] = {}
    paths, labels, names, splits = [], [], [], []
    for split, folder in layout:
        for cls in _class_folders(folder):
            label = class_ids.setdefault(cls.name, len(class_ids))
            for img in _images_in(cls):
                paths.append(img.relative_to(root).as_posix())
                labels.append(label)
                names.append(cls.name.replace("_", " "))
                splits.append(split)
    if not paths:
        raise FormatError(f"no images in class folders under {root} (expected {root}/<class>/<image>)")
    return Listing(root, listing_frame(paths, labels, names, splits))


def _csv_file(root: Path, annotations: str) -> Path:
    return Path(annotations) if Path(annotations).is_absolute() else root / annotations


def _csv_base(root: Path, csv_file: Path, first_path: str) -> Path:
    """The folder the CSV's image paths are relative to: `root`, or else the CSV's own folder."""
    return root if (root / first_path).is_file() else csv_file.parent


def read_csv(root: Path, annotations: str, **_: object) -> Listing:
    """A CSV with columns `path,label` and optionally `split`, `class_name`, `caption` (captions
    separated by `|`); paths relative to `root` (or to the CSV's folder)."""
    csv_file = _csv_file(root, annotations)
    if not csv_file.is_file():
        raise FormatError(f"CSV annotations {csv_file} not found")
    table = pl.read_csv(csv_file, infer_schema=False)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise FormatError(f"{csv_file}: missing column(s) {sorted(missing)} (needs path,label[,split,class_name,caption])")
    raw = table["label"].to_list()
    class_ids = {v: i for i, v in enumerate(sorted(set(raw), key=lambda v: (not v.isdigit(), int(v) if v.isdigit()
                                                                           else 0, v)))}
    labels = [int(v) if v.isdigit() else class_ids[v] for v in raw]
    names = table["class_name"].to_list() if "class_name" in table.columns else [v.replace("_", " ") for v in raw]
    splits = table["split"].to_list() if "split" in table.columns else ["all"] * table.height
    captions = ([[c.strip() for c in (v or "").split("|") if c.strip()] for v in table["caption"].to_list()]
                if "caption" in table.columns else None)
    paths = table["path"].to_list()
    return Listing(_csv_base(root, csv_file, paths[0]), listing_frame(paths, labels, names, splits, captions))


def csv_inputs(root: Path, annotations: str, **_: object) -> list[tuple[str, Path, list[Path]]]:
    """The files `read_csv` reads, as (label, folder, files) groups: the CSV itself and every image it
    lists (what `prepare` of a csv dataset depends on, pipeline.sources.fingerprint). A CSV that is
    missing or unreadable is listed alone: `prepare` then reruns and says what is wrong with it."""
    csv_file = _csv_file(root, annotations)
    groups = [("annotations", csv_file.parent, [csv_file])]
    try:
        paths = pl.read_csv(csv_file, infer_schema=False)["path"].to_list() if csv_file.is_file() else []
    except (pl.exceptions.PolarsError, OSError):
        paths = []
    paths = [p for p in paths if p]
    if paths:
        base = _csv_base(root, csv_file, paths[0])
        groups.append(("images", base, [base / p for p in paths]))
    return groups
