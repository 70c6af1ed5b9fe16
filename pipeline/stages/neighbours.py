"""Stage `neighbours`: a qualitative grid of the top neighbours of fixed queries, per method.

For the first in-domain and the first out-of-domain image-image set, `qualitative.queries` queries
drawn with a fixed seed (the same for every method) and their `qualitative.neighbours` nearest
neighbours (query excluded) under each method of `qualitative.methods`; a green frame is a hit
(same label), red a miss. Writes `reports/neighbours.png`.
"""
from __future__ import annotations

import argparse

import numpy as np

from pipeline import io as pio
from pipeline import paths
from pipeline.config import EvalSetCfg, Params, load_params
from pipeline.lib.images import decode_image
from pipeline.lib.retrieval import knn
from pipeline.stages.common import eval_sets, image_sources, select_rows, split_frame, stored_embeddings

FIGURE = paths.REPORTS / "neighbours.png"


def chosen_sets(params: Params) -> dict[str, tuple[str, EvalSetCfg]]:
    """The first in-domain and the first out-of-domain set (query = gallery sets only)."""
    out: dict[str, tuple[str, EvalSetCfg]] = {}
    for name, (domain, cfg) in eval_sets(params).items():
        if cfg.index_split is None and domain not in {d for d, _ in out.values()}:
            out[name] = (domain, cfg)
    return out


def main(args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = load_params(args.params, args.overrides)
    q = params.qualitative
    sets = chosen_sets(params)
    rows = []  # (set name, query image, [(method, [(image, hit)])])
    for name, (_, cfg) in sets.items():
        frame = split_frame(params, cfg.dataset, cfg.split, cfg.subset, ["id", "image", "path"])
        sources, names = image_sources(cfg.dataset, frame), frame["path"].to_list()
        row_of_id = {int(i): r for r, i in enumerate(frame["id"].to_list())}
        picked = None
        per_method = {}
        for method in q.methods:
            emb, labels, ids = select_rows(stored_embeddings(method), cfg, cfg.split)
            if picked is None:  # the same queries for every method (rows are in manifest order)
                picked = np.random.default_rng(q.seed).choice(len(ids), size=min(q.queries, len(ids)), replace=False)
            _, nn = knn(emb, emb, q.neighbours, exclude_self=True)
            per_method[method] = (nn, labels, ids)
        for i in picked:
            _, labels, ids = per_method[q.methods[0]]
            query = decode_image(sources[row_of_id[int(ids[i])]], names[row_of_id[int(ids[i])]])
            blocks = []
            for method in q.methods:
                nn, labels, ids = per_method[method]
                blocks.append((method, [(decode_image(sources[row_of_id[int(ids[j])]]), labels[j] == labels[i])
                                        for j in nn[i]]))
            rows.append((name, query, blocks))

    cols = len(q.methods) * (q.neighbours + 1)
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.9, len(rows) * 1.05), dpi=110, squeeze=False)
    for r, (name, query, blocks) in enumerate(rows):
        for b, (method, hits) in enumerate(blocks):
            cells = [(query, None)] + hits
            for c, (img, hit) in enumerate(cells):
                ax = axes[r, b * (q.neighbours + 1) + c]
                ax.imshow(img)
                ax.set_xticks([])
                ax.set_yticks([])
                colour = "black" if hit is None else ("tab:green" if hit else "tab:red")
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(1 if hit is None else 3)
                if r == 0 and c == 0:
                    ax.set_title(f"{method}: query | top-{q.neighbours}", loc="left", fontsize=8)
                if b == 0 and c == 0:
                    ax.set_ylabel(name, fontsize=7)
    fig.suptitle("Top neighbours of fixed queries (green = same class, red = other class)", fontsize=9)
    fig.tight_layout()
    with pio.atomic_path(FIGURE) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    print(f"[neighbours] {len(rows)} queries x {len(q.methods)} methods -> {FIGURE}")
