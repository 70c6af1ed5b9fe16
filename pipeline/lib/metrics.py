"""Retrieval metrics exactly as the reference code defines them (docs/method.md#metrics), vectorised.

rel[q, r-1] ∈ {0,1} for ranks r = 1..k of q's neighbour list (q itself already removed);
n_q = number of items in the index relevant to q (q itself excluded when queries = index).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MAP_AT_R = "map@r"


def at(metric: str, rank: int) -> str:
    """The key of a metric at a rank in every result (`at("map", 20)` → "map@20"): the one place it is built."""
    return f"{metric}@{rank}"


def _codes(labels: np.ndarray, domains: np.ndarray | None) -> np.ndarray:
    """One integer per (label, domain) pair, so that relevance is a plain equality of codes."""
    _, lab = np.unique(np.asarray(labels), return_inverse=True)
    if domains is None:
        return lab.reshape(-1)
    _, dom = np.unique(np.asarray(domains), return_inverse=True)
    return lab.reshape(-1).astype(np.int64) * (int(dom.max(initial=0)) + 1) + dom.reshape(-1)


def joint_codes(query_labels, index_labels, query_domains=None, index_domains=None) -> tuple[np.ndarray, np.ndarray]:
    """(query codes, index codes) from one shared vocabulary: equal codes = relevant. Domains count
    only when both are given. Computed once per set, so relevance per chunk of queries is a lookup."""
    both = query_domains is not None and index_domains is not None
    codes = _codes(np.concatenate([np.asarray(query_labels), np.asarray(index_labels)]),
                   np.concatenate([np.asarray(query_domains), np.asarray(index_domains)]) if both else None)
    return codes[:len(query_labels)], codes[len(query_labels):]


def coded_relevance(query_codes: np.ndarray, index_codes: np.ndarray, neighbor_ids: np.ndarray) -> np.ndarray:
    """rel [Q,k] bool from `joint_codes`: neighbour j is relevant to query q when their codes are
    equal; id -1 (a slot the index could not fill) is never relevant."""
    ids = np.asarray(neighbor_ids)
    valid = ids >= 0
    return (index_codes[np.where(valid, ids, 0)] == query_codes[:, None]) & valid


def relevance(query_labels: np.ndarray, index_labels: np.ndarray, neighbor_ids: np.ndarray,
              query_domains: np.ndarray | None = None, index_domains: np.ndarray | None = None) -> np.ndarray:
    """rel [Q,k] bool: same label (and same domain, for a merged multi-domain index); id -1 is never relevant."""
    return coded_relevance(*joint_codes(query_labels, index_labels, query_domains, index_domains), neighbor_ids)


def count_positives(query_labels: np.ndarray, index_labels: np.ndarray, exclude_self: bool,
                    query_domains: np.ndarray | None = None, index_domains: np.ndarray | None = None) -> np.ndarray:
    """n_q [Q] int64: index items relevant to each query, minus the query itself when `exclude_self`."""
    q, i = joint_codes(query_labels, index_labels, query_domains, index_domains)
    counts = np.bincount(i, minlength=int(max(q.max(initial=-1), i.max(initial=-1))) + 1)
    return counts[q].astype(np.int64) - int(exclude_self)


def per_query_metrics(rel: np.ndarray, n_pos: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-query top_1, mmp, map and recall (hit rate) at k, from the first k columns of `rel`.

    m = min(n_q, k); mMP@k = (Σ_{r≤m} rel_r)/m; mAP@k = (1/m) Σ_{r≤k} P@r·rel_r; both 0 when n_q = 0.
    A list shorter than k (a gallery with fewer than k items) is everything there is to retrieve,
    so the values stay exact; ranks beyond the list count as misses.
    """
    r = np.asarray(rel, bool)[:, :k].astype(np.float64)
    n_pos = np.asarray(n_pos, np.int64)
    cum = np.cumsum(r, axis=1)
    m = np.minimum(n_pos, k)
    denom = np.maximum(m, 1)  # n_q = 0: the numerators below are 0 too, so the metric is 0
    # hits within the first m ranks (m may exceed a short list: then all of it)
    hits_m = np.take_along_axis(np.pad(cum, ((0, 0), (1, 0))), np.minimum(m, r.shape[1])[:, None], 1)[:, 0]
    prec_at = cum / np.arange(1, r.shape[1] + 1)
    return {"top_1": r[:, 0] if r.shape[1] else np.zeros(len(r)),
            "mmp": np.where(m > 0, hits_m / denom, 0.0),
            "map": np.where(m > 0, (prec_at * r).sum(1) / denom, 0.0),
            "recall": r.any(1).astype(np.float64)}


def map_at_r(rel: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """Per-query MAP@R (Musgrave et al.): (1/R) Σ_{r≤R} P@r·rel_r with R = n_q; 0 when R = 0.

    Exact only for rows with >= R columns; a row with fewer (R > k) counts the missing ranks as
    misses, a lower bound: `evaluation.ranked_relevance` searches each query R columns deep.
    """
    r = np.asarray(rel, bool).astype(np.float64)
    n_pos = np.asarray(n_pos, np.int64)
    ranks = np.arange(1, r.shape[1] + 1)
    within = ranks[None, :] <= n_pos[:, None]
    prec_at = np.cumsum(r, 1) / ranks
    return np.where(n_pos > 0, (prec_at * r * within).sum(1) / np.maximum(n_pos, 1), 0.0)


def ranking_metrics(rel: np.ndarray, n_pos: np.ndarray, ks: Sequence[int] = (1, 5, 10, 20),
                    with_map_at_r: bool = False) -> dict[str, float]:
    """Means over queries of per_query_metrics: top_1, mmp@k, map@k, recall@k for k in ks (+ map@r).

    Values are fractions in [0, 1]. Every k in ks gets keys, also k > rel.shape[1]: the pipeline
    only produces fewer than k columns when the gallery is smaller than k, where that is exact.
    """
    out: dict[str, float] = {}
    for k in ks:
        pq = per_query_metrics(rel, n_pos, k)
        out["top_1"] = float(pq["top_1"].mean())
        for name in ("mmp", "map", "recall"):
            out[at(name, k)] = float(pq[name].mean())
    if with_map_at_r:
        out[MAP_AT_R] = float(map_at_r(rel, n_pos).mean())
    return out


def _best_positive_rank(queries: np.ndarray, candidates: np.ndarray, query_ids: np.ndarray,
                        candidate_ids: np.ndarray, chunk_size: int) -> np.ndarray:
    """Per query: number of candidates scoring strictly higher than its best positive (0 = top).

    A candidate is positive when its id equals the query's id. No positive → a rank no k reaches.
    Counting beats a sort: it is O(N) per query and resolves ties without an arbitrary order.
    """
    ranks = []
    for start in range(0, len(queries), chunk_size):
        s = queries[start:start + chunk_size] @ candidates.T
        positive = candidate_ids[None, :] == query_ids[start:start + chunk_size, None]
        best = np.where(positive, s, -np.inf).max(1, initial=-np.inf)
        ranks.append(np.where(positive.any(1), (s > best[:, None]).sum(1), np.iinfo(np.int64).max))
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def image_text_recall(image_emb: np.ndarray, text_emb: np.ndarray, text_image_ids: np.ndarray,
                      ks: Sequence[int] = (1, 5, 10), chunk_size: int = 4096) -> dict[str, float]:
    """Image↔text recall@k on L2-normalised embeddings; text i describes image text_image_ids[i].

    i2t_r@k: an image is a hit if ANY of its captions is in its top k texts; t2i_r@k: a text is a
    hit if its image is in its top k images; mean_r@1 = (i2t_r@1 + t2i_r@1) / 2.
    Tie rule (optimistic, deterministic): rank = number of candidates scoring strictly higher than
    the best ground truth, hit iff rank < k. An image without captions is always a miss.
    """
    image_emb, text_emb = np.asarray(image_emb, np.float32), np.asarray(text_emb, np.float32)
    image_ids, text_image_ids = np.arange(len(image_emb)), np.asarray(text_image_ids)
    i2t = _best_positive_rank(image_emb, text_emb, image_ids, text_image_ids, chunk_size)
    t2i = _best_positive_rank(text_emb, image_emb, text_image_ids, image_ids, chunk_size)
    out = {at("i2t_r", k): float((i2t < k).mean()) for k in ks}
    out.update({at("t2i_r", k): float((t2i < k).mean()) for k in ks})
    out[at("mean_r", 1)] = float(((i2t < 1).mean() + (t2i < 1).mean()) / 2)
    return out


def zero_shot_accuracy(image_emb: np.ndarray, class_text_emb: np.ndarray, labels: np.ndarray,
                       chunk_size: int = 8192) -> float:
    """Fraction of images whose highest-cosine class prompt (row c = class c) is their label."""
    class_text_emb = np.asarray(class_text_emb, np.float32)
    # cosine needs unit prompts; the image's own norm does not change its argmax over classes
    class_text_emb = class_text_emb / np.maximum(np.linalg.norm(class_text_emb, axis=1, keepdims=True), 1e-12)
    pred = np.concatenate([np.zeros(0, np.int64)] + [
        (np.asarray(image_emb[s:s + chunk_size], np.float32) @ class_text_emb.T).argmax(1)
        for s in range(0, len(image_emb), chunk_size)])
    return float((pred == np.asarray(labels)).mean())
