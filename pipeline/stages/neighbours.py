"""Stage `neighbours`: what retrieval looks like, the same fixed queries under each method.

Per image-image evaluation set, `qualitative.queries` queries drawn with a fixed seed (the same for
every method) and their `qualitative.neighbours` nearest neighbours (the query itself excluded; a
set with a separate gallery is searched in its gallery). Only those queries are searched, so the
stage stays cheap for every method and set. Writes
- `data/neighbours/neighbours.json`: every set under every method of `methods`, with ids, paths,
  class names, scores, hits and small thumbnails (data URIs): the report page's grids;
- `reports/neighbours.png`: the first in-domain and the first out-of-domain set under
  `qualitative.methods`; a green frame is a hit (same label), red a miss.
"""
from __future__ import annotations

import argparse
import base64

import numpy as np
import polars as pl

from pipeline import io as pio
from pipeline import paths
from pipeline.config import EvalSetCfg, Params, load_params
from pipeline.lib.images import decode_image, thumbnail
from pipeline.lib.retrieval import build_index, neighbours_of, search
from pipeline.stages.common import eval_sets, image_sources, select_rows, split_frame, stored_embeddings

THUMB_SIDE = 96  # px: larger images are shrunk (JPEG) for the page; smaller ones stay as they are (PNG)


def chosen_sets(params: Params) -> dict[str, tuple[str, EvalSetCfg]]:
    """The figure's sets: the first in-domain and the first out-of-domain set (query = gallery sets only)."""
    out: dict[str, tuple[str, EvalSetCfg]] = {}
    for name, (domain, cfg) in eval_sets(params).items():
        if cfg.index_split is None and domain not in {d for d, _ in out.values()}:
            out[name] = (domain, cfg)
    return out


def set_neighbours(params: Params, cfg: EvalSetCfg) -> tuple[list[int], dict[str, list[list[tuple[int, float]]]]]:
    """(query ids, method → per query [(neighbour id, score)]) for one evaluation set."""
    q = params.qualitative
    query_ids: list[int] = []
    results: dict[str, list[list[tuple[int, float]]]] = {}
    for method in params.methods:
        load = stored_embeddings(method)
        emb, _, ids = select_rows(load, cfg, cfg.split)
        if not query_ids:  # drawn once, over the rows in manifest order (the same for every method)
            rows = np.random.default_rng(q.seed).choice(len(ids), size=min(q.queries, len(ids)), replace=False)
            query_ids = [int(ids[r]) for r in rows]
        row_of = {int(i): r for r, i in enumerate(ids)}
        rows = np.array([row_of[i] for i in query_ids])
        if cfg.index_split:
            g_emb, _, g_ids = select_rows(load, cfg, cfg.index_split)
            scores, nn = search(build_index(g_emb), emb[rows], q.neighbours)
        else:
            g_ids = ids
            scores, nn = neighbours_of(rows, emb, q.neighbours)
        results[method] = [[(int(g_ids[j]), round(float(s), 4)) for j, s in zip(row_nn, row_s) if j >= 0]
                           for row_nn, row_s in zip(nn, scores)]
    return query_ids, results


def image_rows(params: Params, cfg: EvalSetCfg, wanted: set[int]) -> dict[int, dict]:
    """id → {path, label, class_name, image source} of the wanted rows of a set's query and gallery splits."""
    out: dict[int, dict] = {}
    for split in dict.fromkeys([cfg.split, cfg.index_split or cfg.split]):
        frame = split_frame(params, cfg.dataset, split, cfg.subset, ["id", "image", "path", "label", "class_name"])
        frame = frame.filter(pl.col("id").is_in(sorted(wanted)))
        for row, source in zip(frame.drop("image").iter_rows(named=True), image_sources(cfg.dataset, frame)):
            out[int(row["id"])] = {"path": row["path"], "label": int(row["label"]), "class_name": row["class_name"],
                                   "source": source}
    return out


def grid_entry(params: Params, name: str, domain: str, cfg: EvalSetCfg) -> dict:
    """Everything the report page shows of one set: queries, neighbours per method, thumbnails."""
    query_ids, results = set_neighbours(params, cfg)
    wanted = set(query_ids) | {i for per_query in results.values() for row in per_query for i, _ in row}
    rows = image_rows(params, cfg, wanted)
    items = {}
    for i, row in rows.items():
        data, mime, (w, h) = thumbnail(decode_image(row["source"], row["path"]), THUMB_SIDE)
        items[str(i)] = {"path": row["path"], "label": row["label"], "class_name": row["class_name"], "width": w,
                         "height": h, "thumb": f"data:{mime};base64,{base64.b64encode(data).decode()}"}
    label = lambda i: rows[i]["label"]  # noqa: E731
    return {"name": name, "domain": domain, "dataset": cfg.dataset, "split": cfg.split, "subset": cfg.subset,
            "gallery_split": cfg.index_split or cfg.split, "queries": query_ids,
            "results": {m: [[{"id": j, "score": s, "hit": label(j) == label(qid)} for j, s in row]
                            for qid, row in zip(query_ids, per_query)] for m, per_query in results.items()},
            "items": items}


def draw_figure(params: Params, sets: list[dict], dest) -> None:
    """The compact grid of the written report: chosen sets × `qualitative.methods`, query | top-k."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = params.qualitative
    grid = {entry["name"]: entry for entry in sets}
    rows = [(name, qid, i) for name in chosen_sets(params) for i, qid in enumerate(grid[name]["queries"])]
    cols = len(q.methods) * (q.neighbours + 1)
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.9, len(rows) * 1.05), dpi=110, squeeze=False)
    for r, (name, qid, i) in enumerate(rows):
        entry = grid[name]
        image = lambda j: decode_image(base64.b64decode(entry["items"][str(j)]["thumb"].split(",", 1)[1]))  # noqa: E731
        for b, method in enumerate(q.methods):
            cells = [(qid, None)] + [(n["id"], n["hit"]) for n in entry["results"][method][i]]
            for c, (j, hit) in enumerate(cells):
                ax = axes[r, b * (q.neighbours + 1) + c]
                ax.imshow(image(j))
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
    with pio.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    q = params.qualitative
    sets = [grid_entry(params, name, domain, cfg) for name, (domain, cfg) in eval_sets(params).items()]
    grid = {"queries": q.queries, "neighbours": q.neighbours, "methods": list(params.methods), "sets": sets}
    with pio.atomic_path(paths.neighbours(), directory=True) as out:
        pio.write_json(grid, out / paths.neighbour_grid().name)
        draw_figure(params, sets, paths.neighbours_figure())
    print(f"[neighbours] {len(sets)} sets x {len(params.methods)} methods x {q.queries} queries -> "
          f"{paths.neighbour_grid()}, {paths.neighbours_figure()}")
