"""`python -m pipeline search <method> (--image PATH | --text "…") [--set NAME] [-k 10]`.

Searches one evaluation set's gallery with the index the `index` stage built for `method`: an image
file (embedded by the method's vision tower, in the pipeline's eval view) or a text (embedded by
the frozen text tower: the vision tower was fine-tuned against it). Prints rank, score, label,
class name and the image's path as the manifest records it (a file under the dataset's root, or the
name of an image packed into the manifest).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from pipeline import io as pio
from pipeline import paths
from pipeline.config import EvalSetCfg, Params, load_params
from pipeline.lib import retrieval
from pipeline.lib.images import decode_image
from pipeline.stages.common import eval_sets
from pipeline.stages.searching import search_settings


def pick_set(params: Params, name: str | None) -> tuple[str, EvalSetCfg]:
    """The named image-image evaluation set, or the first one (an in-domain set when there is one)."""
    sets = eval_sets(params)
    if not sets:
        raise ValueError("no image-image evaluation sets configured (eval.in_domain / eval.out_of_domain)")
    if name is None:
        name = next(iter(sets))
    if name not in sets:
        raise ValueError(f"unknown set '{name}' (sets: {', '.join(sets)})")
    return name, sets[name][1]


def load_index(method: str, name: str) -> faiss.Index:
    file = paths.index(method) / f"{name}.faiss"
    if not file.is_file():
        raise FileNotFoundError(f"missing index {file}: run `dvc repro` (or `python -m pipeline index {method}`)")
    index = faiss.read_index(str(file))
    if retrieval.index_ids(index) is None:
        raise ValueError(f"index {file} has no ids (built by an older version): "
                         f"rebuild it with `python -m pipeline index {method}`")
    return index


def image_query(method: str, image: str, params: Params) -> np.ndarray:
    """The image file's embedding under the method's vision tower, eval view as in `embed`."""
    import torch

    from pipeline.lib.models import set_threads
    from pipeline.lib.embedding import View, embed_sources
    from pipeline.stages.encoders import load_method_visual

    set_threads(params.runtime.threads)
    visual, spec = load_method_visual(method, "cpu")
    return embed_sources(visual, [image], View.of(spec), torch.device("cpu"), 1, names=[image])


def check_query_image(image: str) -> None:
    """An unreadable or oversized query image fails with its name before any index or model loads."""
    if not Path(image).is_file():
        raise FileNotFoundError(f"no image file {image}")
    decode_image(image)


def text_query(text: str, params: Params) -> np.ndarray:
    """The text's embedding under the teacher's frozen text tower."""
    from pipeline.lib.models import embed_texts, set_threads, tokenizer_for
    from pipeline.stages.encoders import load_teacher

    if not text.strip():
        raise ValueError("--text is empty")
    set_threads(params.runtime.threads)
    model, spec = load_teacher("cpu")
    return embed_texts(model, tokenizer_for(spec["model"]), [text])


def gallery_rows(method: str, cfg: EvalSetCfg) -> pl.DataFrame:
    """id, label, path and class name of the indexed images, in the index's order (embeddings
    table of the gallery split, its subset applied, + the manifest's class names)."""
    split = cfg.index_split or cfg.split
    _, table = pio.read_embeddings(paths.embeddings(method) / paths.split_file(cfg.dataset, split))
    if "path" not in table.columns:
        raise ValueError(f"the embeddings of '{method}' carry no image paths (built by an older version): "
                         f"rerun `python -m pipeline embed {method}`")
    if cfg.subset is not None:
        table = table.filter(pl.col("subset") == cfg.subset)
    names = pio.read_manifest(paths.prepared(cfg.dataset), ["label", "class_name"]).unique("label")
    return table.select("id", "label", "path").join(names, on="label", how="left", maintain_order="left")


def results(index: faiss.Index, query: np.ndarray, k: int, settings: retrieval.SearchSettings,
            rows: pl.DataFrame) -> pl.DataFrame:
    """The top-k rows for the query, best first: rank, score, label, class name, path."""
    scores, ids = retrieval.search(index, query, k, settings=settings)
    found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
    hits = pl.DataFrame({"rank": range(1, len(found) + 1), "id": [i for i, _ in found],
                         "score": [s for _, s in found]}, schema={"rank": pl.Int64, "id": pl.Int64, "score": pl.Float64})
    return hits.join(rows, on="id", how="left").sort("rank")


def format_results(table: pl.DataFrame) -> str:
    width = max([len("class")] + [len(str(c)) for c in table["class_name"].to_list()])
    lines = [f"{'rank':>4}  {'score':>7}  {'label':>5}  {'class':<{width}}  path"]
    for r in table.iter_rows(named=True):
        lines.append(f"{r['rank']:>4}  {r['score']:>7.4f}  {r['label']:>5}  {str(r['class_name']):<{width}}  {r['path']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    if args.method not in params.methods:
        raise ValueError(f"unknown method '{args.method}' (methods: {', '.join(params.methods)})")
    if args.k < 1:
        raise ValueError(f"-k must be at least 1 (got {args.k})")
    if args.image:
        check_query_image(args.image)
    name, cfg = pick_set(params, args.set)
    index = load_index(args.method, name)
    faiss.omp_set_num_threads(max(1, params.runtime.threads))
    rows = gallery_rows(args.method, cfg)
    if not np.array_equal(retrieval.index_ids(index), rows["id"].to_numpy()):
        raise ValueError(f"the index of set '{name}' does not hold the images of the embeddings table: "
                         f"rerun `python -m pipeline index {args.method}`")
    query = image_query(args.method, args.image, params) if args.image else text_query(args.text, params)
    # one query: FAISS on the CPU (copying the gallery to a GPU would cost more than the search)
    table = results(index, query, args.k, search_settings(params, device="cpu"), rows)
    where = "/".join(p for p in (cfg.dataset, cfg.index_split or cfg.split, cfg.subset) if p)
    print(f"{args.method}, set {name} ({where}, {index.ntotal} images), query "
          + (f"image {args.image}" if args.image else f"text {args.text!r}"))
    print(format_results(table))
