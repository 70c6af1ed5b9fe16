"""Exact (and opt-in approximate) inner-product kNN with FAISS, chunked to bound memory."""
from __future__ import annotations

import faiss
import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def build_index(embeddings: np.ndarray, kind: str = "flat", nlist: int = 64, hnsw_m: int = 32) -> faiss.Index:
    """Inner-product index: 'flat' (exact), 'ivf' (trained IVFFlat) or 'hnsw'."""
    emb = np.ascontiguousarray(embeddings, np.float32)
    d = emb.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = max(1, min(nlist, len(emb) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(emb)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind '{kind}' (flat | ivf | hnsw)")
    index.add(emb)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int, chunk_size: int = 8192,
           nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q,k], ids [Q,k]) searched chunk by chunk; k is clipped to the index size."""
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = nprobe
    k = min(k, index.ntotal)
    q = np.ascontiguousarray(queries, np.float32)
    scores, ids = [], []
    for start in range(0, len(q), chunk_size):
        s, i = index.search(q[start:start + chunk_size], k)
        scores.append(s)
        ids.append(i)
    if not scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(scores), np.concatenate(ids).astype(np.int64)


def knn(queries: np.ndarray, index_embeddings: np.ndarray, k: int, exclude_self: bool,
        index: faiss.Index | None = None, chunk_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN. With `exclude_self` (query i is index item i) the query is removed from its own
    list by id (not by assuming it ranks first: duplicates can tie with it)."""
    index = index if index is not None else build_index(index_embeddings, "flat")
    if not exclude_self:
        return search(index, queries, k, chunk_size)
    scores, ids = search(index, queries, k + 1, chunk_size)
    own = ids == np.arange(len(ids))[:, None]
    # drop the query's own column, or the last one when the query is not among the k+1 results
    drop = np.where(own.any(1), own.argmax(1), ids.shape[1] - 1)
    keep = np.ones_like(ids, dtype=bool)
    keep[np.arange(len(ids)), drop] = False
    width = ids.shape[1] - 1
    return scores[keep].reshape(-1, width), ids[keep].reshape(-1, width)


def recall_against_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of the exact top-k found by an approximate search."""
    hits = [len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(approx_ids.tolist(), exact_ids.tolist())]
    return float(np.mean(hits)) if hits else 1.0
