"""Stage `index <method>`: FAISS indices over each image-image evaluation gallery.

Exact `IndexFlatIP` by default (metrics are exact); `index.kind=ivf|hnsw` builds an approximate
index instead and records its recall@k against exact search next to it, measured the way
`evaluate` searches: the set's own queries (each one excluded from its own list when the queries
are the gallery), at most `index.recall_queries` of them (a seeded draw), with the same
`index.nprobe` / `index.ef_search`. Each index is an `IndexIDMap2`: a search answers with manifest
row ids (`python -m pipeline search`). `index.json` records the kind, the search settings and,
per set, the vectors, the lists (IVF) and the recall.
"""
from __future__ import annotations

import argparse

import faiss
import numpy as np

from pipeline import io as pio
from pipeline import paths
from pipeline.config import EvalSetCfg, Params, load_params
from pipeline.lib import retrieval
from pipeline.stages.common import EmbeddingLoader, eval_sets, select_rows, stored_embeddings
from pipeline.stages.searching import search_settings

RECALL_SEED = 0  # the recall check's draw of queries: the same rows for every method and run


def set_index(params: Params, load: EmbeddingLoader, cfg: EvalSetCfg,
              settings: retrieval.SearchSettings) -> tuple[faiss.Index, dict]:
    """(the id-mapped index over the set's gallery, what index.json records of it)."""
    emb, _, ids = select_rows(load, cfg, cfg.index_split or cfg.split)
    ix = params.index
    index = retrieval.build_index(emb, ix.kind, nlist=ix.nlist, hnsw_m=ix.hnsw_m, ids=ids)
    entry: dict = {"vectors": int(index.ntotal)}
    if ix.kind == "ivf":
        entry["nlist"] = int(faiss.extract_index_ivf(index).nlist)  # fewer than asked for on a small gallery
    if ix.kind != "flat":
        entry.update(approximate_recall(params, load, cfg, retrieval.positional(index, ids), emb, settings))
    return index, entry


def approximate_recall(params: Params, load: EmbeddingLoader, cfg: EvalSetCfg, index: faiss.Index,
                       gallery: np.ndarray, settings: retrieval.SearchSettings) -> dict:
    """recall@eval.k of the approximate (positional) index against exact search, on at most
    `index.recall_queries` of the set's evaluation queries."""
    k = params.eval.k
    if cfg.index_split:  # separate gallery: the query split searches it, nothing to exclude
        queries, _, _ = select_rows(load, cfg, cfg.split)
        rows = retrieval.sample_rows(len(queries), params.index.recall_queries, RECALL_SEED)
        recall = retrieval.recall_vs_exact(index, gallery, queries[rows], k, settings)
    else:
        rows = retrieval.sample_rows(len(gallery), params.index.recall_queries, RECALL_SEED)
        recall = retrieval.recall_vs_exact(index, gallery, gallery[rows], k, settings, own_ids=rows)
    return {"recall_vs_exact": recall, "recall_queries": int(len(rows))}


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    faiss.omp_set_num_threads(max(1, params.runtime.threads))
    load, report = stored_embeddings(args.method), {}
    settings = search_settings(params)
    with pio.atomic_path(paths.index(args.method), directory=True) as out:
        for name, (_, cfg) in eval_sets(params).items():
            index, report[name] = set_index(params, load, cfg, settings)
            faiss.write_index(index, str(out / f"{name}.faiss"))
            recall = report[name].get("recall_vs_exact")
            print(f"[index {args.method}] {name}: {index.ntotal} vectors ({params.index.kind})"
                  + (f", recall@{params.eval.k} vs exact {recall:.3f} on {report[name]['recall_queries']} queries"
                     if recall is not None else ""))
        pio.write_json({"kind": params.index.kind, "ids": "manifest row id",
                        "search": settings.record(params.index.kind), "sets": report}, out / "index.json")
