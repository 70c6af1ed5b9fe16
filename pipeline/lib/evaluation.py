"""Evaluation protocols built from retrieval + metrics: kNN image retrieval, image-text, zero-shot.

These are the only entry points the stages use, so validation during fine-tuning and the final
test evaluation compute their numbers the same way.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from pipeline.lib import metrics, retrieval
from pipeline.lib.retrieval import EXACT, SearchSettings


# neighbour ids (+ scores) one search call holds at once: ~200 MB, whatever the largest class
MAP_AT_R_BUDGET = 2 ** 24
# One more neighbour column costs about 1/2048 of a search at k ≈ 20 (FAISS flat, 20k x 768, 2
# threads: k = 101 / 513 / 1025 / 2049 took 1.03 / 1.22 / 1.62 / 2.10 x the CPU time of k = 21;
# docs/benchmarks.md): `width_groups` weighs a wide search of every large class against a narrower one.
COLUMN_COST = 1 / 2048
SPLIT_GAIN = 0.9  # a group of its own for the huge classes only when it saves a tenth of the time:
                  # each group is one more pass over the gallery, which the model does not count

Relevance = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (query rows, neighbour ids) → rel


def search_cost(queries: int, width: int) -> float:
    """Modelled time of searching `queries` queries at `width` neighbours (unit: one query at k ≈ 20)."""
    return queries * (1.0 + width * COLUMN_COST)


def width_groups(n_pos: np.ndarray, k: int, with_map_at_r: bool = True) -> list[tuple[np.ndarray, int]]:
    """The queries (rows, in order) grouped by how many neighbours one search of them returns.

    Exact MAP@R of a query needs its first R = n_q neighbours, the other metrics its first k. So:
    queries with R <= k (or all, without MAP@R) at k; the others at their largest R, in one search
    too, unless a few huge classes would make every other query pay for their width: then the
    queries above a width W (the one that minimises the modelled time, if that saves a tenth of it)
    are a group of their own.
    """
    n_pos = np.asarray(n_pos, np.int64)
    long = np.flatnonzero(n_pos > k) if with_map_at_r else np.zeros(0, np.int64)
    if not len(long):
        return [(np.arange(len(n_pos)), k)]
    short = np.flatnonzero(n_pos <= k)
    groups = [(short, k)] if len(short) else []
    sizes = np.sort(n_pos[long])
    widths = np.unique(sizes)
    above = len(sizes) - np.searchsorted(sizes, widths, side="right")  # queries wider than each width
    total = [search_cost(len(sizes) - a, int(w)) + search_cost(int(a), int(sizes[-1])) for w, a in zip(widths, above)]
    best = int(np.argmin(total))
    width = int(widths[best] if total[best] < SPLIT_GAIN * total[-1] else widths[-1])
    huge = long[n_pos[long] > width]
    groups.append((long[n_pos[long] <= width], width))
    if len(huge):
        groups.append((huge, int(n_pos[huge].max())))
    return groups


def ranked_relevance(index, query_emb: np.ndarray, n_pos: np.ndarray, k: int, exclude_self: bool,
                     relevant: Relevance, with_map_at_r: bool = True, settings: SearchSettings = EXACT,
                     budget: int = MAP_AT_R_BUDGET) -> tuple[np.ndarray, np.ndarray | None]:
    """(rel [Q, min(k, cols)] of the first k neighbours, per-query MAP@R or None), exactly.

    Each query is searched once, as wide as its group of `width_groups` (so one search in all when
    no class is huge), in chunks of `budget // width` queries; only the first k relevances and each
    query's MAP@R are kept, so memory is bounded by the chunk whatever the largest class.
    `relevant(rows, ids)` is the relevance of neighbour `ids` to the queries `rows` (same label, and
    same set in a merged index).
    """
    columns = max(0, min(k, index.ntotal - int(exclude_self)))
    rel = np.zeros((len(query_emb), columns), bool)
    map_r = np.zeros(len(query_emb)) if with_map_at_r else None
    for rows, width in width_groups(n_pos, k, with_map_at_r):
        chunk = max(1, budget // (width + 1))
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            found = relevant(part, _neighbours(index, query_emb[part], part, width, exclude_self, settings))
            rel[part] = found[:, :columns]
            if map_r is not None:
                map_r[part] = metrics.map_at_r(found, n_pos[part])
    return rel, map_r


def _neighbours(index, queries: np.ndarray, rows: np.ndarray, k: int, exclude_self: bool,
                settings: SearchSettings) -> np.ndarray:
    """The ids of the k neighbours of `queries` (query rows[i] excluded from its own list)."""
    if exclude_self:
        return retrieval.search_excluding(index, queries, rows, k, settings=settings)[1]
    return retrieval.search(index, queries, k, settings=settings)[1]


def knn_retrieval(query_emb: np.ndarray, query_labels: np.ndarray, k: int, ks: Sequence[int],
                  index_emb: np.ndarray | None = None, index_labels: np.ndarray | None = None,
                  index=None, with_map_at_r: bool = True, settings: SearchSettings = EXACT) -> dict[str, float]:
    """Image-to-image kNN metrics (docs/method.md#metrics); MAP@R exact (`ranked_relevance`).

    Without a separate index set, the query set is searched against itself and each query is
    removed from its own list (n_q excludes it too); with `index_emb` (InShop style) it is not.
    `index` may be a prebuilt FAISS index over the index set (the `index` stage's artifact),
    searched with `settings` (its nprobe / ef_search, the device).
    """
    exclude_self = index_emb is None
    gallery = query_emb if exclude_self else index_emb
    gallery_labels = query_labels if exclude_self else index_labels
    index = retrieval.on_device(index if index is not None else retrieval.build_index(gallery, "flat"),
                                settings.device)
    if exclude_self and len(query_emb) != index.ntotal:
        raise ValueError(f"the query set is the index set here ({len(query_emb)} queries, {index.ntotal} indexed)")
    q_codes, g_codes = metrics.joint_codes(query_labels, gallery_labels)
    n_pos = metrics.count_positives(query_labels, gallery_labels, exclude_self=exclude_self)
    rel, map_r = ranked_relevance(index, query_emb, n_pos, k, exclude_self,
                                  lambda rows, found: metrics.coded_relevance(q_codes[rows], g_codes, found),
                                  with_map_at_r, settings)
    out = metrics.ranking_metrics(rel, n_pos, ks=tuple(ks))
    if with_map_at_r:
        out[metrics.MAP_AT_R] = float(map_r.mean())
    out["queries"] = float(len(query_labels))
    return out


def merged_knn_retrieval(sets: dict[str, tuple[np.ndarray, np.ndarray]], k: int, ks: Sequence[int],
                         settings: SearchSettings = EXACT) -> dict[str, dict[str, float]]:
    """kNN in one index holding every set (the reference's merged index, docs/method.md#metrics): a neighbour is relevant only
    with the same label *and* the same set (domain). Returns metrics per set."""
    names = list(sets)
    emb = np.concatenate([sets[n][0] for n in names])
    labels = np.concatenate([sets[n][1] for n in names])
    domains = np.concatenate([np.full(len(sets[n][1]), i) for i, n in enumerate(names)])
    index = retrieval.on_device(retrieval.build_index(emb, "flat"), settings.device)
    codes, _ = metrics.joint_codes(labels, labels, domains, domains)
    n_pos = metrics.count_positives(labels, labels, True, domains, domains)
    rel, map_r = ranked_relevance(index, emb, n_pos, k, True,
                                  lambda rows, found: metrics.coded_relevance(codes[rows], codes, found), True, settings)
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
