"""Stage `index <method>`: FAISS indices over each image-image evaluation gallery.

Exact `IndexFlatIP` by default (metrics are exact); `index.kind=ivf|hnsw` builds an approximate
index instead and records its recall@k against exact search next to it. Each index is an
`IndexIDMap2`: a search answers with manifest row ids (`python -m pipeline search`).
"""
from __future__ import annotations

import argparse

import faiss
import numpy as np

from pipeline import io as pio
from pipeline import paths
from pipeline.config import load_params
from pipeline.lib import retrieval
from pipeline.stages.common import eval_sets, select_rows, stored_embeddings


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    faiss.omp_set_num_threads(max(1, params.runtime.threads))
    report = {}
    with pio.atomic_path(paths.index(args.method), directory=True) as out:
        for name, (_, cfg) in eval_sets(params).items():
            emb, _, ids = select_rows(stored_embeddings(args.method), cfg, cfg.index_split or cfg.split)
            index = retrieval.build_index(emb, params.index.kind, nlist=params.index.nlist, ids=ids)
            if params.index.kind != "flat":
                k = min(params.eval.k, len(emb))
                _, approx = retrieval.search(retrieval.positional(index, ids), emb, k, nprobe=params.index.nprobe)
                _, exact = retrieval.search(retrieval.build_index(emb, "flat"), emb, k)
                report[name] = {"recall_vs_exact": retrieval.recall_against_exact(approx, exact)}
            faiss.write_index(index, str(out / f"{name}.faiss"))
            print(f"[index {args.method}] {name}: {index.ntotal} vectors ({params.index.kind})"
                  + (f", recall@{params.eval.k} vs exact {report[name]['recall_vs_exact']:.3f}" if name in report else ""))
        pio.write_json({"kind": params.index.kind, "ids": "manifest row id", "sets": report}, out / "index.json")
