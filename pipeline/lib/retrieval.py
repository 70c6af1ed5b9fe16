"""Exact (and opt-in approximate) inner-product kNN with FAISS, chunked to bound memory.

Stored indices carry ids (`IndexIDMap2`: the manifest row id of each vector), so a search answers
with images, not positions; evaluation searches the wrapped index, whose answers are positions.
Every search takes one `SearchSettings`: the IVF lists probed, the HNSW candidate list, and
whether an exact search runs on the CPU (FAISS) or on a CUDA GPU (torch, `pipeline.lib.torch_search`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class SearchSettings:
    """How an index is searched. A stored index keeps FAISS's defaults (nprobe 1, efSearch 16), so
    the values are passed to every search call instead: the first k, MAP@R's second search, the
    recall check, `python -m pipeline search`."""
    nprobe: int | None = None     # IVF: inverted lists visited per query (None: the index's own)
    ef_search: int | None = None  # HNSW: candidate list size per query (None: the index's own)
    device: str = "cpu"           # cpu: FAISS; cuda: exact top-k on the GPU with torch (flat indices)

    def faiss_params(self, index: faiss.Index) -> faiss.SearchParameters | None:
        """FAISS's per-call parameters for this index (None where nothing applies: flat, or unset)."""
        base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
        if isinstance(base, faiss.IndexIVF) and self.nprobe:
            return faiss.SearchParametersIVF(nprobe=self.nprobe)
        if isinstance(base, faiss.IndexHNSW) and self.ef_search:
            return faiss.SearchParametersHNSW(efSearch=self.ef_search)
        return None

    def record(self, kind: str) -> dict:
        """What applies to an index of `kind` (flat, ivf, hnsw), for index.json and the eval JSON."""
        applies = {"flat": ("device",), "ivf": ("device", "nprobe"), "hnsw": ("device", "ef_search")}[kind]
        return {key: value for key, value in asdict(self).items() if key in applies}


EXACT = SearchSettings()  # a flat index searched by FAISS on the CPU


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


def on_device(index: faiss.Index, device: str) -> faiss.Index:
    """The index to search on `device`: itself for 'cpu'; for 'cuda' an exact torch copy of a flat
    index on the GPU (same `ntotal` / `search` API; GPU FAISS is not installed)."""
    if device == "cpu":
        return index
    if device != "cuda":
        raise ValueError(f"unknown search device {device!r} (expected 'cpu' or 'cuda')")
    from pipeline.lib.torch_search import TorchFlatIP

    return TorchFlatIP.of(index)


def search(index: faiss.Index, queries: np.ndarray, k: int, chunk_size: int = 8192,
           settings: SearchSettings = EXACT) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 [Q,k], ids int64 [Q,k]), best first, searched `chunk_size` queries at a time.

    k is clipped to index.ntotal; ids FAISS could not fill (IVF with few probed lists) are -1.
    `settings.nprobe` / `ef_search` are passed per call, so the index is not mutated.
    """
    k = min(k, index.ntotal)
    q = np.ascontiguousarray(queries, np.float32)
    if k <= 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    params = settings.faiss_params(index) if isinstance(index, faiss.Index) else None
    scores, ids = np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
    for start in range(0, len(q), chunk_size):
        scores[start:start + chunk_size], ids[start:start + chunk_size] = index.search(
            q[start:start + chunk_size], k, params=params)
    return scores, ids


def knn(queries: np.ndarray, index_embeddings: np.ndarray | None, k: int, exclude_self: bool,
        index: faiss.Index | None = None, chunk_size: int = 8192,
        settings: SearchSettings = EXACT) -> tuple[np.ndarray, np.ndarray]:
    """kNN (scores, ids), exactly min(k, ntotal - exclude_self) columns (exact unless `index` is not).

    With `exclude_self` (query i is index item i) k+1 neighbours are searched and the query's own
    id is removed from its row by id, not by assuming it ranks first: a duplicate vector ties with
    it and may come first. If its id is not among the k+1 (more than k ties), the last one is dropped.
    """
    index = index if index is not None else build_index(index_embeddings, "flat")
    if not exclude_self:
        return search(index, queries, k, chunk_size, settings)
    if len(queries) != index.ntotal:
        raise ValueError(f"exclude_self needs the query set to be the index set "
                         f"({len(queries)} queries, {index.ntotal} indexed)")
    return search_excluding(index, queries, np.arange(len(queries)), k, chunk_size, settings)


def neighbours_of(rows: np.ndarray, embeddings: np.ndarray, k: int,
                  settings: SearchSettings = EXACT) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN (scores, positions) of some items of `embeddings` among all of them, each item
    itself excluded as in `knn(..., exclude_self=True)`; costs len(rows) queries, not len(embeddings)."""
    rows = np.asarray(rows, np.int64)
    index = on_device(build_index(embeddings, "flat"), settings.device)
    return search_excluding(index, np.asarray(embeddings)[rows], rows, k, settings=settings)


def search_excluding(index: faiss.Index, queries: np.ndarray, own_ids: np.ndarray, k: int,
                     chunk_size: int = 8192, settings: SearchSettings = EXACT) -> tuple[np.ndarray, np.ndarray]:
    """The k neighbours of each query other than itself (query i is index item own_ids[i]): k+1 are
    searched and the own id dropped by id (a duplicate vector may rank first; if the own id is
    absent, the last is dropped); min(k, ntotal − 1) columns."""
    scores, ids = search(index, queries, k + 1, chunk_size, settings)
    if ids.shape[1] == 0:
        return scores, ids
    own = ids == np.asarray(own_ids)[:, None]
    drop = np.where(own.any(1), own.argmax(1), ids.shape[1] - 1)
    keep = np.ones(ids.shape, bool)
    keep[np.arange(len(ids)), drop] = False
    width = ids.shape[1] - 1
    return scores[keep].reshape(-1, width), ids[keep].reshape(-1, width)


def sample_rows(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """At most `limit` of the positions 0..n-1, drawn without replacement with `seed`, in increasing
    order; all of them when n <= limit."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def recall_vs_exact(index: faiss.Index, gallery: np.ndarray, queries: np.ndarray, k: int,
                    settings: SearchSettings, own_ids: np.ndarray | None = None) -> float:
    """recall@k of `index` searched with `settings` against exact search of `gallery` (the vectors
    it holds, in its order), for these queries only; with `own_ids` (query i is gallery item
    own_ids[i]) each query's own item is excluded from both lists, as evaluation excludes it."""
    exact = build_index(gallery, "flat")
    if own_ids is None:
        approx_ids, exact_ids = search(index, queries, k, settings=settings)[1], search(exact, queries, k)[1]
    else:
        approx_ids = search_excluding(index, queries, own_ids, k, settings=settings)[1]
        exact_ids = search_excluding(exact, queries, own_ids, k)[1]
    return recall_against_exact(approx_ids, exact_ids)


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
