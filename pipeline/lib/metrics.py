"""Retrieval metrics exactly as METHOD §7.1 defines them, vectorised over queries.

rel[q, r] ∈ {0,1} for ranks r = 1..k (query already removed); n_q = relevant items in the index.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def relevance(query_labels: np.ndarray, index_labels: np.ndarray, neighbor_ids: np.ndarray,
              query_domains: np.ndarray | None = None, index_domains: np.ndarray | None = None) -> np.ndarray:
    """rel[q, r]: same label (and same domain for a merged multi-domain index); id -1 is never relevant."""
    valid = neighbor_ids >= 0
    safe = np.where(valid, neighbor_ids, 0)
    rel = (index_labels[safe] == query_labels[:, None]) & valid
    if query_domains is not None and index_domains is not None:
        rel &= index_domains[safe] == query_domains[:, None]
    return rel


def count_positives(query_labels: np.ndarray, index_labels: np.ndarray, exclude_self: bool,
                    query_domains: np.ndarray | None = None, index_domains: np.ndarray | None = None) -> np.ndarray:
    """n_q = number of index items relevant to each query (minus the query itself when excluded)."""
    if query_domains is not None and index_domains is not None:
        keys_i = np.stack([index_labels, index_domains], 1)
        keys_q = np.stack([query_labels, query_domains], 1)
        uniq, inv = np.unique(np.concatenate([keys_i, keys_q]), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        ids_i, ids_q = inv[:len(keys_i)], inv[len(keys_i):]
    else:
        uniq, inv = np.unique(np.concatenate([index_labels, query_labels]), return_inverse=True)
        ids_i, ids_q = inv[:len(index_labels)], inv[len(index_labels):]
    counts = np.bincount(ids_i, minlength=len(uniq))
    return counts[ids_q].astype(np.int64) - (1 if exclude_self else 0)


def per_query_metrics(rel: np.ndarray, n_pos: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-query top-1, mMP@k, mAP@k and recall@k (hit rate) on the first k columns."""
    r = rel[:, :k].astype(np.float64)
    ranks = np.arange(1, r.shape[1] + 1)
    m = np.minimum(n_pos, k)
    cum = np.cumsum(r, axis=1)
    prec_at = cum / ranks
    has = m > 0
    mm = np.where(has, m, 1)
    # mMP@k = precision at rank m = min(n_q, k): only the first m neighbours count
    mmp = np.where(has, np.take_along_axis(cum, (np.minimum(mm, r.shape[1]) - 1)[:, None], 1)[:, 0] / mm, 0.0)
    map_k = np.where(has, (prec_at * r).sum(1) / mm, 0.0)
    return {"top_1": r[:, 0] if r.shape[1] else np.zeros(len(r)), "mmp": mmp, "map": map_k,
            "recall": (r.sum(1) > 0).astype(np.float64)}


def map_at_r(rel: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """MAP@R (Musgrave et al.): (1/R) Σ_{r≤R} P@r·rel_r with R = n_q. Columns beyond k are
    unavailable: with fewer than R columns the missing ranks count as misses (a lower bound)."""
    r = rel.astype(np.float64)
    ranks = np.arange(1, r.shape[1] + 1)
    within = ranks[None, :] <= n_pos[:, None]
    prec_at = np.cumsum(r, 1) / ranks
    return np.where(n_pos > 0, (prec_at * r * within).sum(1) / np.maximum(n_pos, 1), 0.0)


def ranking_metrics(rel: np.ndarray, n_pos: np.ndarray, ks: Sequence[int] = (1, 5, 10, 20),
                    with_map_at_r: bool = False) -> dict[str, float]:
    """Means over queries of top_1, mmp@k, map@k, recall@k (values in [0,1]). A gallery smaller
    than k yields lists shorter than k: the metric is then over everything there is to retrieve."""
    out: dict[str, float] = {}
    for k in ks:
        pq = per_query_metrics(rel, n_pos, k)
        out["top_1"] = float(pq["top_1"].mean())
        out[f"mmp@{k}"] = float(pq["mmp"].mean())
        out[f"map@{k}"] = float(pq["map"].mean())
        out[f"recall@{k}"] = float(pq["recall"].mean())
    if with_map_at_r:
        out["map@r"] = float(map_at_r(rel, n_pos).mean())
    return out


def _hits_at(scores: np.ndarray, positive: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """Rank of the best positive = number of items scoring strictly higher (optimistic on ties)."""
    best = np.where(positive, scores, -np.inf).max(1)
    rank = (scores > best[:, None]).sum(1)
    return {k: rank < k for k in ks}


def image_text_recall(image_emb: np.ndarray, text_emb: np.ndarray, text_image_ids: np.ndarray,
                      ks: Sequence[int] = (1, 5, 10), chunk_size: int = 4096) -> dict[str, float]:
    """I→T (hit if any of the image's captions is in its top k) and T→I recall@k, plus mean_r@1.
    Ties are resolved optimistically: rank = number of strictly better-scoring candidates."""
    n_img = len(image_emb)
    i2t = {k: [] for k in ks}
    for start in range(0, n_img, chunk_size):
        s = image_emb[start:start + chunk_size] @ text_emb.T
        pos = text_image_ids[None, :] == np.arange(start, start + len(s))[:, None]
        for k, h in _hits_at(s, pos, ks).items():
            i2t[k].append(h)
    t2i = {k: [] for k in ks}
    for start in range(0, len(text_emb), chunk_size):
        s = text_emb[start:start + chunk_size] @ image_emb.T
        pos = np.arange(n_img)[None, :] == text_image_ids[start:start + len(s), None]
        for k, h in _hits_at(s, pos, ks).items():
            t2i[k].append(h)
    out = {f"i2t_r@{k}": float(np.concatenate(i2t[k]).mean()) for k in ks}
    out.update({f"t2i_r@{k}": float(np.concatenate(t2i[k]).mean()) for k in ks})
    out["mean_r@1"] = (out.get("i2t_r@1", 0.0) + out.get("t2i_r@1", 0.0)) / 2
    return out


def zero_shot_accuracy(image_emb: np.ndarray, class_text_emb: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of argmax cosine over class-prompt embeddings."""
    return float(((image_emb @ class_text_emb.T).argmax(1) == labels).mean())
