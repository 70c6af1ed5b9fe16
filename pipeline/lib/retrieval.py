"""Exact (and opt-in approximate) inner-product kNN with FAISS, chunked to bound memory.

Stored indices carry ids (`IndexIDMap2`: the manifest row id of each vector), so a search answers
with images, not positions; evaluation searches the wrapped index, whose answers are positions.
"""
from __future__ import annotations

import faiss
import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); all-zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def build_index(embeddings: np.ndarray, kind: str = "flat", nlist: int = 64, hnsw_m: int = 32,
                ids: np.ndarray | None = None) -> faiss.Index:
    """Inner-product index over `embeddings`: 'flat' (exact), 'ivf' (IVFFlat, trained here) or 'hnsw'.

    With `ids` (one int64 per row) the index is an `IndexIDMap2` around that index and searches
    answer with those ids; without, with row positions.
    """
    emb = np.ascontiguousarray(embeddings, np.float32)
    d = emb.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        # FAISS wants >= 39 training points per centroid; a tiny gallery gets fewer lists, never 0
        nlist = max(1, min(nlist, len(emb) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(emb)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind {kind!r} (expected 'flat', 'ivf' or 'hnsw')")
    if ids is None:
        index.add(emb)
        return index
    ids = np.ascontiguousarray(ids, np.int64)
    if ids.shape != (len(emb),):
        raise ValueError(f"need one id per embedding ({len(emb)} embeddings, ids of shape {ids.shape})")
    mapped = faiss.IndexIDMap2(index)
    mapped.add_with_ids(emb, ids)
    return mapped


def index_ids(index: faiss.Index) -> np.ndarray | None:
    """The ids an `IndexIDMap2` answers with (in insertion order), or None for a positional index."""
    return faiss.vector_to_array(index.id_map) if isinstance(index, faiss.IndexIDMap) else None


def positional(index: faiss.Index, ids: np.ndarray) -> faiss.Index:
    """The index that answers with positions into `ids` (the rows it was built from, in order).

    An id-mapped index is unwrapped (no per-query id translation: evaluation stays as fast as a
    plain index) after checking it holds exactly `ids`, so a stale index cannot give wrong metrics.
    """
    stored = index_ids(index)
    if stored is None:
        if index.ntotal != len(ids):
            raise ValueError(f"index holds {index.ntotal} vectors but the set has {len(ids)}: rebuild the index")
        return index
    if not np.array_equal(stored, np.asarray(ids, np.int64)):
        raise ValueError(f"index ids differ from the set's rows ({len(stored)} indexed, {len(ids)} rows): "
                         "rebuild the index")
    inner = faiss.downcast_index(index.index)
    inner.referenced_objects = [index]  # keep the owner alive as long as the inner index is used
    return inner


def search(index: faiss.Index, queries: np.ndarray, k: int, chunk_size: int = 8192,
           nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 [Q,k], ids int64 [Q,k]), best first, searched `chunk_size` queries at a time.

    k is clipped to index.ntotal; ids FAISS could not fill (IVF with few probed lists) are -1.
    `nprobe` applies to IVF indices only and is passed per call, so the index is not mutated.
    """
    k = min(k, index.ntotal)
    q = np.ascontiguousarray(queries, np.float32)
    if k <= 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    params = faiss.SearchParametersIVF(nprobe=nprobe) if nprobe and isinstance(base, faiss.IndexIVF) else None
    scores, ids = np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
    for start in range(0, len(q), chunk_size):
        scores[start:start + chunk_size], ids[start:start + chunk_size] = index.search(
            q[start:start + chunk_size], k, params=params)
    return scores, ids


def knn(queries: np.ndarray, index_embeddings: np.ndarray | None, k: int, exclude_self: bool,
        index: faiss.Index | None = None, chunk_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN (scores, ids), exactly min(k, ntotal - exclude_self) columns.

    With `exclude_self` (query i is index item i) k+1 neighbours are searched and the query's own
    id is removed from its row by id, not by assuming it ranks first: a duplicate vector ties with
    it and may come first. If its id is not among the k+1 (more than k ties), the last one is dropped.
    """
    index = index if index is not None else build_index(index_embeddings, "flat")
    if not exclude_self:
        return search(index, queries, k, chunk_size)
    if len(queries) != index.ntotal:
        raise ValueError(f"exclude_self needs the query set to be the index set "
                         f"({len(queries)} queries, {index.ntotal} indexed)")
    return search_excluding(index, queries, np.arange(len(queries)), k, chunk_size)


def neighbours_of(rows: np.ndarray, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN (scores, positions) of some items of `embeddings` among all of them, each item
    itself excluded as in `knn(..., exclude_self=True)`; costs len(rows) queries, not len(embeddings)."""
    rows = np.asarray(rows, np.int64)
    return search_excluding(build_index(embeddings, "flat"), np.asarray(embeddings)[rows], rows, k)


def search_excluding(index: faiss.Index, queries: np.ndarray, own_ids: np.ndarray, k: int,
                     chunk_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """The k neighbours of each query other than itself (query i is index item own_ids[i]): k+1 are
    searched and the own id dropped by id (a duplicate vector may rank first; if the own id is
    absent, the last is dropped); min(k, ntotal − 1) columns."""
    scores, ids = search(index, queries, k + 1, chunk_size)
    if ids.shape[1] == 0:
        return scores, ids
    own = ids == np.asarray(own_ids)[:, None]
    drop = np.where(own.any(1), own.argmax(1), ids.shape[1] - 1)
    keep = np.ones(ids.shape, bool)
    keep[np.arange(len(ids)), drop] = False
    width = ids.shape[1] - 1
    return scores[keep].reshape(-1, width), ids[keep].reshape(-1, width)


def recall_against_exact(approx_ids: np.ndarray, exact_ids: np.ndarray, chunk_size: int = 4096) -> float:
    """Mean over queries of the fraction of exact top-k ids present in the approximate top-k.

    -1 (unfilled) ids never match; a query with no exact ids has nothing to miss and scores 1.
    """
    approx_ids, exact_ids = np.asarray(approx_ids), np.asarray(exact_ids)
    if len(exact_ids) == 0:
        return 1.0
    # [chunk, k_approx, k_exact] comparison table: keep it to ~16M entries
    chunk_size = max(1, min(chunk_size, 2 ** 24 // max(1, approx_ids.shape[1] * exact_ids.shape[1])))
    fractions = []
    for start in range(0, len(exact_ids), chunk_size):
        a, e = approx_ids[start:start + chunk_size], exact_ids[start:start + chunk_size]
        found = ((a[:, :, None] == e[:, None, :]) & (e[:, None, :] >= 0)).any(1).sum(1)
        valid = (e >= 0).sum(1)
        fractions.append(np.where(valid > 0, found / np.maximum(valid, 1), 1.0))
    return float(np.concatenate(fractions).mean())
