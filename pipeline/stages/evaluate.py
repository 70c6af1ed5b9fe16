"""Stage `evaluate <method>`: every metric of one method's encoder on the evaluation sets.

- image→image kNN (in-domain and out-of-domain sets) through the `index` stage's FAISS indices:
  top-1, mMP@k, mAP@k, MAP@R, recall@k (docs/method.md#metrics);
- image↔text recall@1/5/10 against the frozen text tower's caption embeddings (docs/method.md#metrics);
- zero-shot accuracy against class-prompt embeddings.
Writes `data/eval/<method>.json` with the checkpoint-selection criterion logged next to them.
`all_metrics` is the same evaluation over embeddings held in memory (the `wiseft` stage).
"""
from __future__ import annotations

import argparse
from typing import Callable

import faiss
import numpy as np

from pipeline import io as pio
from pipeline import paths
from pipeline.config import Params, load_params
from pipeline.lib.evaluation import image_text, knn_retrieval, merged_knn_retrieval, zero_shot
from pipeline.lib.metrics import at
from pipeline.lib.retrieval import EXACT, SearchSettings, positional
from pipeline.stages.common import EmbeddingLoader, eval_sets, select_rows, set_kind, stored_embeddings
from pipeline.stages.searching import search_settings

IndexLoader = Callable[[str], faiss.Index]  # evaluation set name → its gallery's index


def image_image(params: Params, load: EmbeddingLoader, label: str, indices: IndexLoader | None = None,
                settings: SearchSettings = EXACT) -> dict:
    """kNN metrics of every image-image set; exact search when no prebuilt index is given.

    A stored index answers with manifest ids; it is searched through its positional inner index
    (checked to hold exactly the set's rows), so metrics see gallery positions as before, with
    `settings` (index.nprobe / index.ef_search, the device) in every search, MAP@R's included.
    """
    out = {}
    for name, (domain, cfg) in eval_sets(params).items():
        q_emb, q_labels, q_ids = select_rows(load, cfg, cfg.split)
        stored = indices(name) if indices else None
        if cfg.index_split:
            g_emb, g_labels, g_ids = select_rows(load, cfg, cfg.index_split)
            index = positional(stored, g_ids) if stored is not None else None
            m = knn_retrieval(q_emb, q_labels, params.eval.k, params.eval.ks, g_emb, g_labels, index=index,
                              settings=settings)
        else:
            index = positional(stored, q_ids) if stored is not None else None
            m = knn_retrieval(q_emb, q_labels, params.eval.k, params.eval.ks, index=index, settings=settings)
        out[name] = {"domain": domain, "kind": set_kind(params, cfg), **m}
        print(f"[evaluate {label}] {name:>10} ({domain}): mAP@{params.eval.k} {100 * m[at('map', params.eval.k)]:.2f}"
              f"  top-1 {100 * m['top_1']:.2f}")
    return out


def merged(params: Params, load: EmbeddingLoader, label: str, settings: SearchSettings = EXACT) -> dict:
    """Every query set against the union of all galleries (same label and same set to count)."""
    sets = {}
    for name, (_, cfg) in eval_sets(params).items():
        if cfg.index_split:  # separate-gallery sets have no single query=index collection to merge
            continue
        emb, labels, _ = select_rows(load, cfg, cfg.split)
        sets[name] = (emb, labels)
    out = merged_knn_retrieval(sets, params.eval.k, params.eval.ks, settings) if len(sets) > 1 else {}
    for name, m in out.items():
        print(f"[evaluate {label}] {name:>10} (merged): mAP@{params.eval.k} {100 * m[at('map', params.eval.k)]:.2f}")
    return out


def image_text_sets(params: Params, load: EmbeddingLoader, label: str) -> dict:
    out = {}
    for name, cfg in params.eval.image_text.items():
        img_emb, _, ids = select_rows(load, cfg, cfg.split)
        txt_emb, txt = pio.read_embeddings(paths.features() / f"{name}__captions.parquet")
        row_of_id = {int(i): r for r, i in enumerate(ids)}
        text_image = np.array([row_of_id[int(i)] for i in txt["id"].to_list()])
        out[name] = {"kind": set_kind(params, cfg), **image_text(img_emb, txt_emb, text_image, params.eval.text_ks)}
        print(f"[evaluate {label}] {name:>10} image-text: I→T R@1 {100 * out[name][at('i2t_r', 1)]:.2f}"
              f"  T→I R@1 {100 * out[name][at('t2i_r', 1)]:.2f}")
    return out


def zero_shot_sets(params: Params, load: EmbeddingLoader, label: str) -> dict:
    out = {}
    for name, cfg in params.eval.zero_shot.items():
        img_emb, labels, _ = select_rows(load, cfg, cfg.split)
        prompt_emb, prompts = pio.read_embeddings(paths.features() / f"{name}__prompts.parquet")
        row_of_label = {int(lab): r for r, lab in enumerate(prompts["label"].to_list())}
        out[name] = zero_shot(img_emb, np.array([row_of_label[int(x)] for x in labels]), prompt_emb)
        out[name].update(classes=len(prompts), kind=set_kind(params, cfg))
        print(f"[evaluate {label}] {name:>10} zero-shot: {100 * out[name]['accuracy']:.2f} %")
    return out


def all_metrics(params: Params, load: EmbeddingLoader, label: str, indices: IndexLoader | None = None,
                settings: SearchSettings = EXACT) -> dict:
    """Image-image (+ merged), image-text and zero-shot metrics of one encoder's embeddings."""
    return {"k": params.eval.k,
            "image_image": image_image(params, load, label, indices, settings),
            "image_image_merged": merged(params, load, label, settings) if params.eval.merged else {},
            "image_text": image_text_sets(params, load, label),
            "zero_shot": zero_shot_sets(params, load, label)}


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    faiss.omp_set_num_threads(max(1, params.runtime.threads))
    record = pio.read_json(paths.train_record(args.method))
    indices = lambda name: faiss.read_index(str(paths.index(args.method) / f"{name}.faiss"))  # noqa: E731
    settings = search_settings(params)
    result = {"method": args.method,
              **all_metrics(params, stored_embeddings(args.method), args.method, indices, settings),
              "search": {"index": params.index.kind, **settings.record(params.index.kind)},
              "selection": {"select_on": record["config"]["select_on"], **record["selected"]},
              "train_seconds": record["seconds"], "steps": record["steps"],
              **{key: record.get(key) for key in ("optimizer_steps", "target_batches", "schedule")}}
    pio.write_json(result, paths.evaluation(args.method))
