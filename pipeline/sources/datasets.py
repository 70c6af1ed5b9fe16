"""Real datasets and users' own data → one manifest frame (the `prepare` stage's input).

    root (a local folder)  ─┐
                            ├─ reader of the dataset's own layout (formats.py) ─ splits ─ image check ─ frame
    downloads (+ mirror)  ──┘   fetched to data/downloads/<name>/ with resume, retries and checks

Splits follow docs/method.md#views-and-splits: the dataset's standard test (or query / index) split is kept; the
validation split is a class-disjoint share (`val_class_fraction`) of the training classes;
datasets without any split (a user's folder, Food2K) first get a class-disjoint test share
(`test_class_fraction`). `split_files` replaces all of this with given lists (the reference's
info JSONs: `<split>.json` = [{"path": ..., "class_id": ...}, ...]) so results are comparable.
"""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from hydra.utils import get_method
from tqdm import tqdm

from pipeline import paths
from pipeline.config import ConfigError, DatasetCfg
from pipeline.config.schema import is_bare_name
from pipeline.lib.images import CHECK_MODES, ImageError, check_image
from pipeline.lib.splits import class_disjoint_split
from pipeline.sources import download as dl
from pipeline.sources import formats  # noqa: F401 - the readers the registry names
from pipeline.sources.formats import Listing
from pipeline.sources.registry import SOURCES


# ------------------------------------------------------------------------------ where the files are
def download_url(url: str, mirror: str | None) -> str:
    """The official URL, or the same file name under the user's mirror."""
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if mirror else url


def _file_names(name: str, cfg: DatasetCfg) -> list[str]:
    """The name each download is saved as: bare names, all different (checked before any transfer)."""
    names = []
    for i, item in enumerate(cfg.downloads):
        file = item.filename or download_url(item.url, cfg.mirror).rsplit("/", 1)[-1].split("?")[0]
        if not is_bare_name(file) or file in names:
            why = "the same name as another download" if file in names else "not a bare file name"
            raise ConfigError(f"datasets.{name}.downloads.{i}.filename: {file!r} is {why}; set `filename`")
        names.append(file)
    return names


def _unpack(name: str, got: dl.Fetched, files: Path) -> None:
    """Extract an archive into files/<stem>/ (or copy a plain file there). A corrupt archive that
    was not pinned is removed, so the next run downloads it again instead of failing on it forever."""
    filename = got.path.name
    if not dl.is_archive(filename):
        shutil.copyfile(got.path, files / filename)
        return
    stem = filename
    for suffix in dl.ARCHIVE_SUFFIXES:
        stem = stem.removesuffix(suffix)
    try:
        dl.extract(got.path, files / stem)
    except dl.CorruptArchive as err:
        if got.pinned:
            raise dl.DownloadError(f"datasets.{name}: {err}, yet it matches its pinned checksum: the published file "
                                   "is damaged or the pin is wrong") from None
        dl.forget(got.path)
        raise dl.DownloadError(f"datasets.{name}: {err}: corrupt, removed; the next run downloads it again") from None


def fetch_all(name: str, cfg: DatasetCfg) -> tuple[Path, list[dict[str, Any]]]:
    """Download (or reuse) every file of `datasets.<name>.downloads`, extract the archives, and
    return the folder holding them all plus what was fetched (for the manifest's metadata)."""
    names = _file_names(name, cfg)
    folder = paths.downloads(name)
    files = folder / "files"
    files.mkdir(parents=True, exist_ok=True)
    fetched = []
    for item, filename in zip(cfg.downloads, names):
        url = download_url(item.url, cfg.mirror)
        try:
            got = dl.download(url, folder / filename, item.sha256, item.size, md5=item.md5,
                              retries=cfg.download_retries)
        except dl.DownloadError as err:
            raise dl.DownloadError(f"datasets.{name}: {err}\n  Without network access: fetch it elsewhere and set "
                                   f"datasets.{name}.root to the extracted folder (or datasets.{name}.mirror to a "
                                   "reachable copy).") from None
        _unpack(name, got, files)
        fetched.append({"url": url, "file": filename, "sha256": got.sha256, "bytes": got.size, "pinned": got.pinned})
    return files, fetched


def resolve_root(name: str, cfg: DatasetCfg) -> tuple[Path, list[dict[str, Any]]]:
    """The local folder to read: `root` as given, or the downloads fetched into data/downloads/."""
    if cfg.root:
        root = Path(cfg.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"datasets.{name}.root: folder {root} does not exist. Get {SOURCES[cfg.source].origin}, "
                                    f"then extract or link it there (or set datasets.{name}.root)")
        return root, []
    if cfg.downloads:
        return fetch_all(name, cfg)
    raise ConfigError(f"datasets.{name}: source '{cfg.source}' needs `root` (a local folder) or `downloads`")


def read_listing(name: str, cfg: DatasetCfg, root: Path) -> Listing:
    """The source's reader over the folder: every image with its label, class name and own split."""
    source = SOURCES[cfg.source]
    annotations = cfg.annotations or source.annotations
    if source.needs_annotations and annotations is None:
        raise ConfigError(f"datasets.{name}.annotations: the {cfg.source} source needs the annotation file's path")
    return get_method(source.reader)(root, annotations=annotations, seed=cfg.seed)


# ------------------------------------------------------------------------------ splits
def _with_class_splits(frame: pl.DataFrame, rows: np.ndarray, class_split: dict[str, np.ndarray]) -> pl.DataFrame:
    """`split` of the selected rows set from their class's split."""
    split_of = {int(c): s for s, classes in class_split.items() for c in classes}
    labels = frame["label"].to_numpy()
    new = [split_of[int(lab)] if row else old for lab, row, old in zip(labels, rows, frame["split"].to_list())]
    return frame.with_columns(pl.Series("split", new, dtype=pl.String))


def assign_splits(frame: pl.DataFrame, cfg: DatasetCfg) -> pl.DataFrame:
    """Class-disjoint test (if the dataset has no split) and validation (if it has none) shares,
    drawn by the project's one class-level split (`pipeline.lib.splits.class_disjoint_split`)."""
    unsplit = (frame["split"] == "all").to_numpy()
    if unsplit.any():
        classes = frame["label"].to_numpy()[unsplit]
        return _with_class_splits(frame, unsplit, class_disjoint_split(classes, cfg.seed, cfg.test_class_fraction,
                                                                       cfg.val_class_fraction))
    train = (frame["split"] == "train").to_numpy()
    if not (frame["split"] == "val").any() and train.any():
        classes = frame["label"].to_numpy()[train]
        return _with_class_splits(frame, train, class_disjoint_split(classes, cfg.seed, None, cfg.val_class_fraction))
    return frame


def apply_split_files(frame: pl.DataFrame, folder: Path, name: str) -> pl.DataFrame:
    """Splits (and labels) from `<split>.json` info files; images they do not list are dropped."""
    folder = Path(folder).expanduser()
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"datasets.{name}.split_files: no <split>.json files in {folder}")
    rows = []
    for file in files:
        for entry in json.loads(file.read_text()):
            label = entry["class_id"][0] if isinstance(entry["class_id"], list) else entry["class_id"]
            rows.append({"path": entry["path"], "split_file": file.stem, "class_id": int(label)})
    listed = pl.DataFrame(rows)
    joined = listed.join(frame.drop("split"), on="path", how="left")
    missing = joined.filter(pl.col("class_name").is_null())["path"].to_list()
    if missing:
        raise FileNotFoundError(f"datasets.{name}.split_files: {len(missing)} listed image(s) are not in the "
                                f"dataset, e.g. {missing[:3]}")
    return joined.select(pl.col("path"), pl.col("class_id").alias("label"), "class_name",
                         pl.col("split_file").alias("split"), "captions")


# ------------------------------------------------------------------------------ image check
CHECK_WINDOW = 4096  # images in flight at once: a pending task costs ~1.6 KiB, ImageNet has 1.3 M of them


def _problem(path: Path, mode: str) -> str | None:
    if not path.is_file():
        return "missing"
    if mode in CHECK_MODES:
        try:
            check_image(str(path), mode)
        except ImageError as err:
            return f"unreadable ({str(err).removeprefix(f'cannot decode image {path}: ')})"
    return None


def check_images(base: Path, rel_paths: list[str], mode: str, workers: int = 8) -> dict[str, str]:
    """{relative path: problem} for images that are missing or cannot be read (`mode`: decode, open,
    exists, none). PIL releases the GIL while it decodes, so threads run in parallel; at most
    CHECK_WINDOW images are submitted at a time, whatever the dataset's size."""
    if mode == "none":
        return {}
    problems: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(rel_paths), desc=f"check images ({mode})", unit="img", leave=False,
                 disable=len(rel_paths) < 2000) as bar:
        for start in range(0, len(rel_paths), CHECK_WINDOW):
            window = rel_paths[start:start + CHECK_WINDOW]
            for rel, problem in zip(window, pool.map(lambda p: _problem(base / p, mode), window)):
                if problem is not None:
                    problems[rel] = problem
            bar.update(len(window))
    return problems


# ------------------------------------------------------------------------------ the manifest
def build_manifest(name: str, cfg: DatasetCfg) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The manifest rows of one real dataset (no `id` yet) and the metadata stored with them."""
    root, fetched = resolve_root(name, cfg)
    listing = read_listing(name, cfg, root)
    frame = listing.frame
    if cfg.split_files:
        frame = apply_split_files(frame, Path(cfg.split_files), name)
    else:
        frame = assign_splits(frame, cfg)
    if cfg.keep_splits:
        frame = frame.filter(pl.col("split").is_in(list(cfg.keep_splits)))
    problems = check_images(listing.base, frame["path"].to_list(), cfg.verify_images)
    if problems and not cfg.skip_corrupt:
        examples = "; ".join(f"{listing.base / p}: {why}" for p, why in list(problems.items())[:5])
        raise ImageError(f"datasets.{name}: {len(problems)} bad image(s): {examples}. Fix or remove them, or set "
                         f"datasets.{name}.skip_corrupt=true to skip and count them")
    if problems:
        frame = frame.filter(~pl.col("path").is_in(list(problems)))
        print(f"[prepare {name}] skipped {len(problems)} bad image(s) (skip_corrupt), e.g. {next(iter(problems))}")
    frame = frame.select(
        pl.lit(name).alias("dataset"), "split", pl.lit(name).alias("subset"), "label", "class_name", "path",
        pl.lit(None, dtype=pl.Binary).alias("image"), "captions")
    meta = {"root": str(listing.base.resolve()), "format": cfg.source, "downloads": fetched,
            "skipped_images": sorted(problems)}
    return frame, meta
