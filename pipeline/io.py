"""Stage-side I/O: atomic writes, manifests and embedding tables in Parquet, JSON reports.

Every artifact is written to a temporary and renamed into place, so a failed or killed stage leaves
either the old artifact or nothing, never half a file (docs/pipeline.md#faults-and-atomic-outputs):

- temporaries live in `data/.tmp/` (on the same filesystem, so the rename is atomic), never inside
  a folder that a stage depends on (data/prepared, data/embeddings, data/eval): a half-written
  one there would change DVC's hash of that dependency and rerun its consumers;
- their names carry the owning process and host (`.<name>.<pid>.<host>.<random>.tmp`): one left by
  a killed run (SIGKILL, a lost node) is removed by the next write once no such process lives;
- they are created with the permissions the umask allows (0644 files, 0755 folders by default), as
  a plain `open` or `mkdir` would: tempfile's 0600 / 0700 would hide results from a colleague.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import paths

MANIFEST = "manifest.parquet"
SCRATCH = paths.DATA / ".tmp"  # outputs under construction; removed when empty
_OWNED = re.compile(r"^\..+\.(?P<pid>\d+)\.(?P<host>[A-Za-z0-9-]+)\.[0-9a-f]{8}\.tmp$")


def _host() -> str:
    """This machine's name as it can appear in a file name (letters, digits, '-')."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "localhost"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale(folder: Path | str) -> list[Path]:
    """Remove the temporaries in `folder` whose owner, a process on this host, is gone (a killed
    run's); those of live processes and of other hosts (a shared filesystem) are left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    host = _host()
    for entry in entries:
        owner = _OWNED.match(entry.name)
        if owner and owner["host"] == host and not _alive(int(owner["pid"])):
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def _sweep_unowned(dest: Path) -> None:
    """Temporaries of earlier versions (tempfile's `.<name>.XXXXXXXX.tmp`, no owner recorded) next to `dest`."""
    unowned = re.compile(rf"^\.{re.escape(dest.name)}\.[a-z0-9_]{{8}}\.tmp$")
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(dest.parent):
            if unowned.match(entry.name):
                _remove(Path(entry.path))


def _scratch_for(dest: Path) -> Path:
    """data/.tmp when `dest` is inside this project on data/'s filesystem, else `dest`'s own folder."""
    if not paths.DATA.is_dir() or not Path(os.path.abspath(dest)).is_relative_to(Path.cwd()):
        return dest.parent
    return SCRATCH if os.stat(paths.DATA).st_dev == os.stat(dest.parent).st_dev else dest.parent


def _create(folder: Path, dest: Path, directory: bool, attempts: int = 5) -> Path:
    """A new, empty temporary for `dest` in `folder`, with the umask's permissions."""
    for attempt in range(attempts):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{dest.name}.{os.getpid()}.{_host()}.{secrets.token_hex(4)}.tmp"
        try:
            if directory:
                os.mkdir(tmp)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except (FileNotFoundError, FileExistsError):  # data/.tmp just removed by another run as empty
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def atomic_path(dest: Path | str, directory: bool = False) -> Iterator[Path]:
    """Yield a new temporary path (a file, or a folder with `directory`); move it onto `dest` only
    if the block succeeds, and remove it otherwise (an exception, SIGINT, SIGTERM through the CLI)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder = _scratch_for(dest)
    sweep_stale(folder)
    if not Path(os.path.abspath(dest.parent)).is_relative_to(os.path.abspath(SCRATCH)):
        _sweep_unowned(dest)  # (inside an output under construction there is nothing old to sweep)
    tmp = _create(folder, dest, directory)
    try:
        yield tmp
        if directory and dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            _remove(tmp)
        if folder == SCRATCH:
            with contextlib.suppress(OSError):
                SCRATCH.rmdir()  # only when empty: other runs may be writing


def write_json(data: Any, dest: Path | str) -> None:
    """Atomically write pretty, key-sorted JSON (stable diffs for git-tracked reports)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing input {path}: run the stage that produces it (dvc repro)")
    return json.loads(path.read_text())


def _with_metadata(table: pa.Table, metadata: dict[str, Any]) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): json.dumps(v, sort_keys=True).encode() for k, v in metadata.items()})
    return table.replace_schema_metadata(meta)


def write_parquet(table: pa.Table | pl.DataFrame, dest: Path | str, metadata: dict[str, Any] | None = None) -> None:
    """Atomically write a Parquet file with JSON-encoded schema metadata."""
    if isinstance(table, pl.DataFrame):
        table = table.to_arrow()
    if metadata:
        table = _with_metadata(table, metadata)
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def parquet_metadata(path: Path | str) -> dict[str, Any]:
    """The JSON schema metadata written by `write_parquet`."""
    raw = pq.read_schema(path).metadata or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k.decode()] = json.loads(v)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return out


def read_manifest(dataset_dir: Path | str, columns: list[str] | None = None) -> pl.DataFrame:
    """The prepared manifest of one dataset (id, split, subset, label, class_name, path, image, captions)."""
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"missing manifest {path}: run `python -m pipeline prepare {Path(dataset_dir).name}`")
    return pl.read_parquet(path, columns=columns)


def embeddings_table(ids: np.ndarray, labels: np.ndarray, embeddings: np.ndarray, **columns: Any) -> pa.Table:
    """Arrow table with the embedding as FixedSizeList<float32 | float16, D> (polars reads it as Array)."""
    emb = np.ascontiguousarray(embeddings)
    if emb.dtype not in (np.float32, np.float16):
        emb = emb.astype(np.float32)
    flat = pa.array(emb.reshape(-1), type=pa.float16() if emb.dtype == np.float16 else pa.float32())
    arrays = {"id": pa.array(ids, pa.int64()), "label": pa.array(labels, pa.int64())}
    arrays.update({k: pa.array(v) for k, v in columns.items()})
    arrays["embedding"] = pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])
    return pa.table(arrays)


def content_hash(array: np.ndarray) -> str:
    """SHA-256 of an array's bytes: recorded in metadata so consumers can check what they read."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_embeddings(dest: Path | str, ids: np.ndarray, labels: np.ndarray, embeddings: np.ndarray,
                     metadata: dict[str, Any], **columns: Any) -> None:
    """Write one embedding table with provenance (model, preprocessing, content hash) in the schema."""
    meta = dict(metadata, dim=int(embeddings.shape[1]), rows=int(len(ids)), sha256=content_hash(embeddings))
    write_parquet(embeddings_table(ids, labels, embeddings, **columns), dest, meta)


def read_embeddings(path: Path | str) -> tuple[np.ndarray, pl.DataFrame]:
    """(float32 [N, D] embeddings, the other columns) from an embedding table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing embeddings {path}: run the stage that produces them (dvc repro)")
    table = pq.read_table(path)
    col = table.column("embedding").combine_chunks()
    emb = col.values.to_numpy(zero_copy_only=False).reshape(len(table), col.type.list_size)
    return np.ascontiguousarray(emb, dtype=np.float32), pl.from_arrow(table.drop(["embedding"]))


def read_table_columns(path: Path | str, columns: list[str]) -> pl.DataFrame:
    """Some columns of a table, without reading the embeddings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing table {path}: run the stage that produces it (dvc repro)")
    return pl.from_arrow(pq.read_table(path, columns=columns))


EMBEDDING_DTYPES = {"float32": np.float32, "float16": np.float16}


def write_embedding_chunks(dest: Path | str, chunks, metadata: dict[str, Any], dtype: str = "float32",
                           array: Path | str | None = None) -> int:
    """One embedding table written a row group per chunk, never whole in memory (1M × 768 float32 is 3 GB).

    `chunks()` yields (ids, labels, embeddings, {column: values}) and is called twice: once for the
    content hash (it goes into the schema metadata, which Parquet writes first), once to write. With
    `array`, the embeddings also go into a `.npy` file the training loop memory-maps (every rank then
    reads the same pages instead of holding a copy). Returns the number of rows."""
    digest, rows, dim = hashlib.sha256(), 0, None
    for _, _, emb, _ in chunks():
        block = np.ascontiguousarray(emb, dtype=EMBEDDING_DTYPES[dtype])
        digest.update(block.tobytes())
        rows, dim = rows + len(block), block.shape[1]
    meta = dict(metadata, dim=int(dim or 0), rows=rows, sha256=digest.hexdigest(), dtype=dtype)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(dest))
        out = None
        if array is not None:  # plain writes, not a memory-map: written pages do not stay in this process
            out = stack.enter_context(stack.enter_context(atomic_path(array)).open("wb"))
            np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(
                np.dtype(EMBEDDING_DTYPES[dtype])), "fortran_order": False, "shape": (rows, dim)})
        writer = None
        for ids, labels, emb, columns in chunks():
            block = np.ascontiguousarray(emb, dtype=EMBEDDING_DTYPES[dtype])
            table = _with_metadata(embeddings_table(ids, labels, block, **columns), meta)
            if writer is None:
                writer = stack.enter_context(pq.ParquetWriter(tmp, table.schema, compression="zstd"))
            writer.write_table(table)
            if out is not None:
                out.write(block.tobytes())
    return rows
