"""Stage `coverage`: how close each evaluation set is to the replay data, before any fine-tuning.

For every image-image set: the median over its test images (at most `coverage.max_images`, drawn with
`coverage.seed`) of the highest teacher-feature cosine to a replay train image, divided by the same
median against the set's own train split (the same dataset and subset). 1 means the replay covers
the set as well as its own training images would; lower means farther (docs/protocol.md). Writes
`data/eval/coverage.json`; the report prints it next to each set's retention.
"""
from __future__ import annotations

import argparse

import faiss
import numpy as np

from pipeline import io as pio
from pipeline import paths
from pipeline.config import EvalSetCfg, Params, load_params
from pipeline.lib.embedding import View, embed_sources
from pipeline.lib.models import resolve_device, set_threads
from pipeline.lib.retrieval import build_index, search
from pipeline.stages.common import eval_sets, image_sources, set_kind, split_frame
from pipeline.stages.encoders import load_teacher_visual


def sample_embeddings(params: Params, visual, view: View, device, cfg: EvalSetCfg, split: str) -> np.ndarray | None:
    """Teacher embeddings of at most `coverage.max_images` images of a set's split (None: no such split)."""
    try:
        frame = split_frame(params, cfg.dataset, split, cfg.subset, ["image", "path"])
    except ValueError:
        return None
    rng = np.random.default_rng(params.coverage.seed)
    if frame.height > params.coverage.max_images:
        frame = frame[np.sort(rng.choice(frame.height, params.coverage.max_images, replace=False)).tolist()]
    return embed_sources(visual, image_sources(cfg.dataset, frame), view, device, params.features.batch_size,
                         params.runtime.precision, params.runtime.num_workers, f"coverage {cfg.dataset}/{split}",
                         frame["path"].to_list())


def median_best_cosine(queries: np.ndarray, gallery: np.ndarray) -> float:
    scores, _ = search(build_index(gallery, "flat"), queries, 1)
    return float(np.median(scores[:, 0]))


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    set_threads(params.runtime.threads)
    faiss.omp_set_num_threads(max(1, params.runtime.threads))
    device = resolve_device(params.runtime.device)
    visual, spec = load_teacher_visual(device)
    view = View.of(spec)
    replay, _ = pio.read_embeddings(paths.features() / paths.split_file(params.roles.generic, "train"))
    out = {}
    for name, (_, cfg) in eval_sets(params).items():
        test = sample_embeddings(params, visual, view, device, cfg, cfg.split)
        own = sample_embeddings(params, visual, view, device, cfg, "train")
        to_replay = median_best_cosine(test, replay)
        to_own = median_best_cosine(test, own) if own is not None else None
        out[name] = {"kind": set_kind(params, cfg), "to_replay": round(to_replay, 4),
                     "to_own_train": None if to_own is None else round(to_own, 4),
                     "coverage": None if not to_own else round(to_replay / to_own, 4), "images": int(len(test))}
        print(f"[coverage] {name:>15} ({out[name]['kind']}): {out[name]['coverage']} "
              f"(replay {to_replay:.3f}, own train {to_own if to_own is None else round(to_own, 3)})")
    pio.write_json({"max_images": params.coverage.max_images, "sets": out}, paths.coverage())
