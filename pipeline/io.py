"""Stage-side I/O: atomic writes, manifests and embedding tables in Parquet, JSON reports.

Every artifact is written to a temporary sibling and renamed into place, so a failed or killed
stage leaves either the old artifact or nothing, never half a file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.parquet"


@contextlib.contextmanager
def atomic_path(dest: Path | str, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; move it onto `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


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
