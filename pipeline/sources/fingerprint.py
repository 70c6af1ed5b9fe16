"""What a dataset reads from disk, and a fingerprint of those files that moves exactly when they do.

`prepare <name>` depends on `data/fingerprints/<name>.json`, written by the `fingerprint` stage
(DVC runs it on every `dvc repro`, the Snakefile when it is read). For each input of the dataset
(its `root` folder, or a csv's annotation file and the images it lists, and its `split_files`)
the fingerprint holds the number of files, their bytes and one SHA-256 over every file's path and
content hash. Adding, removing, editing or moving a file (from one class folder to another, say)
changes it; touching a file (a new mtime, the same bytes) does not.

Re-checking a large root stays cheap: every file is stat'ed (size, mtime, inode); when the whole
listing is the one recorded last time, no file is read. Otherwise only the files whose stat moved
are hashed again; the others' hashes come from `data/.fingerprints/<name>.json`, the way DVC's
state database keeps its own. Embedded datasets read no files: their fingerprint is a constant.
Files fetched by `downloads` are pinned by their params (URL, SHA-256), not fingerprinted.

Loads neither polars nor torch (a csv dataset's reader loads polars): DVC starts this on every repro.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import tempfile
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from pipeline.sources.registry import SOURCES

CACHE_VERSION = 1
MISSING = "-"          # the content hash of a listed file that is not there (or cannot be read)
HASH_WORKERS = 8       # hashing releases the GIL: threads keep a disk (or a network share) busy
HASH_CHUNK = 4096


@dataclass(frozen=True)
class Input:
    """Files a dataset's reader reads: `files` below `base`, or (files None) every file below it."""
    label: str
    base: Path
    files: list[Path] | None = None


Row = tuple[str, int, int, int]  # path relative to the input's base, size (-1: missing), mtime_ns, inode


@dataclass
class Scan:
    """One input as found on disk: each file's path relative to `base` and its stat, as columns."""
    input: Input
    exists: bool
    rel: list[str] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    mtime_ns: list[int] = field(default_factory=list)
    ino: list[int] = field(default_factory=list)
    _paths: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, item: Input, rows: list[Row]) -> "Scan":
        columns = [list(column) for column in zip(*rows)] if rows else [[], [], [], []]
        return cls(item, True, *columns)

    def paths(self) -> list[str]:
        """Each file's path as the stats file keys it (computed once)."""
        if len(self._paths) != len(self.rel):
            prefix = os.path.join(str(self.input.base), "")
            self._paths = [prefix + r for r in self.rel]
        return self._paths


# ------------------------------------------------------------------------------ what a dataset reads
def _function(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def dataset_inputs(cfg: Mapping[str, Any]) -> list[Input]:
    """The inputs of one `datasets.<name>` entry of params.yaml (a plain mapping, as written)."""
    source = SOURCES.get(cfg.get("source"))
    if source is not None and source.embedded:
        return []
    inputs = []
    if cfg.get("root"):
        root = Path(cfg["root"]).expanduser()
        annotations = cfg.get("annotations") or (source.annotations if source is not None else None)
        if source is not None and source.inputs and (annotations or not source.needs_annotations):
            from pipeline.sources import formats  # noqa: F401 - the `inputs` functions the registry names
            inputs += [Input(*group) for group in _function(source.inputs)(root, annotations=annotations)]
        else:  # every file below root (also a csv without its file named: prepare says what is missing)
            inputs.append(Input("root", root))
    if cfg.get("split_files"):  # read as <folder>/*.json (pipeline.sources.datasets.apply_split_files)
        folder = Path(cfg["split_files"]).expanduser()
        inputs.append(Input("split_files", folder, sorted(folder.glob("*.json"))))
    return inputs


# ------------------------------------------------------------------------------ stat every file
def _walk(base: Path) -> Iterator[Row]:
    """A row for every file below `base`, following symbolic links (a root is often a link to a
    shared copy) but entering each real folder once."""
    seen: set[tuple[int, int]] = set()
    stack = [(str(base), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(folder))
        except OSError:  # a folder that cannot be listed: no reader can list it either
            continue
        for entry in entries:
            try:
                if entry.is_dir():
                    stack.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file():
                    st = entry.stat()
                    yield prefix + entry.name, st.st_size, st.st_mtime_ns, st.st_ino
            except OSError:  # a broken link: no reader sees it either
                continue


def _row(path: Path, base: Path) -> Row:
    rel = os.path.relpath(path, base)
    try:
        st = path.stat()
    except OSError:
        return rel, -1, 0, 0
    return rel, st.st_size, st.st_mtime_ns, st.st_ino


def scan(item: Input) -> Scan:
    if item.files is not None:
        return Scan.of(item, [_row(path, item.base) for path in item.files])
    if not item.base.is_dir():
        return Scan(item, False)
    return Scan.of(item, sorted(_walk(item.base)))


def listing_digest(scans: list[Scan]) -> str:
    """One hash of every input's file names and stats: equal to last time means nothing to read."""
    digest = hashlib.sha256(f"{CACHE_VERSION}".encode())
    for s in scans:
        digest.update(f"\0{s.input.label}\0{s.input.base}\0{s.exists}\0".encode())
        digest.update("\0".join(s.rel).encode("utf-8", "surrogateescape"))
        for code, column in (("q", s.size), ("q", s.mtime_ns), ("Q", s.ino)):  # inodes may pass 2**63
            digest.update(array(code, column).tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------ content hashes
def _file_hash(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return MISSING


def read_stats(path: Path) -> tuple[dict[str, Any] | None, Any]:
    """The header of a stats file (its listing digest and the inputs it summed up to) and a function
    that reads its per-file table {path: (size, mtime_ns, inode, sha256)} (only needed on a change)."""
    def table() -> dict[str, tuple[int, int, int, str]]:
        try:
            with path.open(encoding="utf-8") as f:
                f.readline()
                columns = json.loads(f.readline())
            rows = zip(*(columns[k] for k in ("path", "size", "mtime_ns", "ino", "sha256")))
        except (OSError, ValueError, KeyError):
            return {}  # a damaged table: every file is hashed again
        return {p: (s, m, i, h) for p, s, m, i, h in rows}
    try:
        with path.open(encoding="utf-8") as f:
            header = json.loads(f.readline())
        if header.get("version") == CACHE_VERSION:
            return header, table
    except (OSError, ValueError):
        pass
    return None, dict


def content_hashes(scans: list[Scan], known: dict[str, tuple[int, int, int, str]], label: str) -> tuple[
        dict[str, str], int]:
    """{path: sha256} of every scanned file: the known hash where size, mtime and inode are unchanged,
    a new one otherwise. Returns the hashes and how many files were read."""
    hashes, todo = {}, []
    for s in scans:
        for path, size, mtime, ino in zip(s.paths(), s.size, s.mtime_ns, s.ino):
            old = known.get(path)
            if size < 0:
                hashes[path] = MISSING
            elif old is not None and old[:3] == (size, mtime, ino) and old[3] != MISSING:
                hashes[path] = old[3]
            else:
                todo.append((path, size))
    if len(todo) >= 1000:
        print(f"[fingerprint] {label}: hashing {len(todo)} new or changed files "
              f"({sum(size for _, size in todo) / 1e6:,.0f} MB)", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
        for start in range(0, len(todo), HASH_CHUNK):  # a chunk at a time: one future per file is heavy
            chunk = [p for p, _ in todo[start:start + HASH_CHUNK]]
            hashes.update(zip(chunk, pool.map(_file_hash, chunk)))
    return hashes, len(todo)


def summarize(scans: list[Scan], hashes: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per input: its folder, file count, bytes and one SHA-256 over (relative path, content hash)
    of every file: names and bytes only, no times, so a touch changes nothing."""
    out: dict[str, dict[str, Any]] = {}
    for s in scans:
        entry: dict[str, Any] = {"path": str(s.input.base)}
        if not s.exists:
            out[s.input.label] = {**entry, "exists": False}
            continue
        lines = "".join(f"{rel}\t{hashes[path]}\n" for rel, path in zip(s.rel, s.paths()))
        digest = hashlib.sha256(lines.encode("utf-8", "surrogateescape"))
        missing = sum(1 for path in s.paths() if hashes[path] == MISSING)
        entry.update(files=len(s.rel) - missing, bytes=sum(max(size, 0) for size in s.size),
                     sha256=digest.hexdigest())
        if missing:
            entry["missing"] = missing
        out[s.input.label] = entry
    return out


# ------------------------------------------------------------------------------ one dataset
def write_if_changed(path: Path, text: str) -> bool:
    """Replace `path` atomically, and only if its content differs: its mtime then moves only on a
    change, which is what Snakemake goes by. (Not pipeline.io: it loads pyarrow and polars.)"""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _stats_text(listing: str, inputs: dict[str, Any], scans: list[Scan], hashes: dict[str, str]) -> str:
    paths = [p for s in scans for p in s.paths()]
    columns = {"path": paths, "size": [x for s in scans for x in s.size],
               "mtime_ns": [x for s in scans for x in s.mtime_ns], "ino": [x for s in scans for x in s.ino],
               "sha256": [hashes[p] for p in paths]}
    header = {"version": CACHE_VERSION, "listing": listing, "inputs": inputs}
    return json.dumps(header) + "\n" + json.dumps(columns, separators=(",", ":")) + "\n"


@dataclass
class Fingerprint:
    doc: dict[str, Any]           # what data/fingerprints/<name>.json holds
    read: int = 0                 # files whose content had to be hashed
    absent: list[Path] = field(default_factory=list)  # input folders not found (the previous doc was kept)


def fingerprint(name: str, cfg: Mapping[str, Any], stats_file: Path,
                previous: dict[str, Any] | None = None) -> Fingerprint:
    """The fingerprint of one dataset's files; the stats file is brought up to date. When a folder
    it reads is absent (a share not mounted, results pulled without the data) and there is a
    `previous` fingerprint, that one is kept: `prepare` could only fail, and its results stand."""
    inputs = dataset_inputs(cfg)
    absent = [item.base for item in inputs if not item.base.is_dir()]
    if absent and previous and previous.get("inputs"):
        return Fingerprint(previous, 0, absent)
    scans = [scan(item) for item in inputs]
    if not scans:
        return Fingerprint({"dataset": name, "inputs": {}})
    listing = listing_digest(scans)
    header, table = read_stats(stats_file)
    if header is not None and header["listing"] == listing:
        return Fingerprint({"dataset": name, "inputs": header["inputs"]})
    hashes, read = content_hashes(scans, table(), name)
    summary = summarize(scans, hashes)
    write_if_changed(stats_file, _stats_text(listing, summary, scans, hashes))
    return Fingerprint({"dataset": name, "inputs": summary}, read)
