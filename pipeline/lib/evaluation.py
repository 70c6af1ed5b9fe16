"""Evaluation protocols built from retrieval + metrics: kNN image retrieval, image-text, zero-shot.

These are the only entry points the stages use, so validation during fine-tuning and the final
test evaluation compute their numbers the same way.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from pipeline.lib import metrics, retrieval


# neighbour ids (+ scores) the second, MAP@R search holds at once: ~200 MB, whatever the largest class
MAP_AT_R_BUDGET = 2 ** 24


def map_at_r_exact(index, query_emb: np.ndarray, rel: np.ndarray, n_pos: np.ndarray, exclude_self: bool,
                   relevant: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   budget: int = MAP_AT_R_BUDGET) -> np.ndarray:
    """Per-query MAP@R from R = n_q neighbours (Musgrave et al.), exactly.

    The first search's k columns (`rel`) are enough for every query with R <= k; only the queries of
    larger classes are searched again, with k = their largest R (+1 for the query itself), in chunks
    of `budget // k` queries, so memory is bounded by the largest class. When every class has <= k
    items there is no second search. `relevant(rows, ids)` is the relevance of neighbour `ids` to
    the queries `rows` (same label, and same set in a merged index).
    """
    out = metrics.map_at_r(rel, n_pos)  # exact where R <= the columns searched
    long = np.flatnonzero(n_pos > rel.shape[1])
    if not len(long):
        return out
    k_r = int(n_pos[long].max())
    chunk = max(1, budget // (k_r + 1))
    for start in range(0, len(long), chunk):
        rows = long[start:start + chunk]
        if exclude_self:
            _, ids = retrieval.search_excluding(index, query_emb[rows], rows, k_r)
        else:
            _, ids = retrieval.search(index, query_emb[rows], k_r)
        out[rows] = metrics.map_at_r(relevant(rows, ids), n_pos[rows])
    return out


def knn_retrieval(query_emb: np.ndarray, query_labels: np.ndarray, k: int, ks: Sequence[int],
                  index_emb: np.ndarray | None = None, index_labels: np.ndarray | None = None,
                  index=None, with_map_at_r: bool = True) -> dict[str, float]:
    """Image-to-image kNN metrics (docs/method.md#metrics); MAP@R exact (`map_at_r_exact`).

    Without a separate index set, the query set is searched against itself and each query is
    removed from its own list (n_q excludes it too); with `index_emb` (InShop style) it is not.
    `index` may be a prebuilt FAISS index over the index set (the `index` stage's artifact).
    """
    exclude_self = index_emb is None
    gallery = query_emb if exclude_self else index_emb
    gallery_labels = query_labels if exclude_self else index_labels
    index = index if index is not None else retrieval.build_index(gallery, "flat")
    _, ids = retrieval.knn(query_emb, gallery, k, exclude_self=exclude_self, index=index)
    rel = metrics.relevance(query_labels, gallery_labels, ids)
    n_pos = metrics.count_positives(query_labels, gallery_labels, exclude_self=exclude_self)
    out = metrics.ranking_metrics(rel, n_pos, ks=tuple(ks))
    if with_map_at_r:
        out[metrics.MAP_AT_R] = float(map_at_r_exact(
            index, query_emb, rel, n_pos, exclude_self,
            lambda rows, found: metrics.relevance(query_labels[rows], gallery_labels, found)).mean())
    out["queries"] = float(len(query_labels))
    return out


def merged_knn_retrieval(sets: dict[str, tuple[np.ndarray, np.ndarray]], k: int, ks: Sequence[int]
                         ) -> dict[str, dict[str, float]]:
    """kNN in one index holding every set (the reference's merged index, docs/method.md#metrics): a neighbour is relevant only
    with the same label *and* the same set (domain). Returns metrics per set."""
    names = list(sets)
    emb = np.concatenate([sets[n][0] for n in names])
    labels = np.concatenate([sets[n][1] for n in names])
    domains = np.concatenate([np.full(len(sets[n][1]), i) for i, n in enumerate(names)])
    index = retrieval.build_index(emb, "flat")
    _, ids = retrieval.knn(emb, emb, k, exclude_self=True, index=index)
    rel = metrics.relevance(labels, labels, ids, domains, domains)
    n_pos = metrics.count_positives(labels, labels, True, domains, domains)
    map_r = map_at_r_exact(index, emb, rel, n_pos, True, lambda rows, found: metrics.relevance(
        labels[rows], labels, found, domains[rows], domains))
    out, start = {}, 0
    for i, name in enumerate(names):
        rows = slice(start, start + len(sets[name][1]))
        out[name] = {**metrics.ranking_metrics(rel[rows], n_pos[rows], ks=tuple(ks)),
                     metrics.MAP_AT_R: float(map_r[rows].mean())}
        start = rows.stop
    return out


def image_text(image_emb: np.ndarray, text_emb: np.ndarray, text_image_ids: np.ndarray,
               ks: Sequence[int]) -> dict[str, float]:
    """Image↔text recall@k in both directions (several captions per image)."""
    return metrics.image_text_recall(image_emb, text_emb, text_image_ids, ks=tuple(ks))


def zero_shot(image_emb: np.ndarray, labels: np.ndarray, prompt_emb: np.ndarray) -> dict[str, float]:
    """Zero-shot accuracy against class-prompt embeddings (prompt row c = class label c)."""
    return {"accuracy": metrics.zero_shot_accuracy(image_emb, prompt_emb, labels)}
