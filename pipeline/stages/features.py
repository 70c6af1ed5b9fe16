"""Stage `features`: run the frozen teacher once over what every method shares.

- `<generic>__train__images.parquet` (+ `.npy`, the same rows for the training loop to memory-map):
  distillation targets f0(x) of the replay train split, eval view (as the reference precomputes them:
  docs/method.md#what-is-trained-on-what), looked up by id.
- `<generic>__val__images.parquet`: teacher features of the replay val split (selection, few-shot).
- `<set>__captions.parquet`: the frozen text tower over each image-text set's captions.
- `<set>__prompts.parquet`: class prompts of each zero-shot set.
- `<generic>__train__prompts.parquet`: class prompts of the replay train classes (LwF, EWC, GIFT).

The replay splits are embedded `features.chunk_rows` images at a time: each chunk is kept in
data/.resume/features/ as it is done, so a killed run resumes at the chunk it was in, and the table
is written a row group per chunk, never held whole in memory (`features.dtype: float16` halves it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline import io as pio
from pipeline import paths
from pipeline.config import Params, load_params
from pipeline.lib.embedding import View, embed_sources
from pipeline.lib.models import embed_texts, resolve_device, set_threads, tokenizer_for
from pipeline.lib.prompts import class_prompts
from pipeline.stages.common import image_sources, leading_share, replay_frame, spec_metadata, split_frame
from pipeline.stages.encoders import load_teacher


def chunk_folder(params: Params, spec: dict, split: str, frame: pl.DataFrame) -> Path:
    """Where one split's finished chunks wait: keyed by the teacher, the rows, the view and the chunking."""
    blob = {"spec": spec, "ids": hashlib.sha256(frame["id"].to_numpy().tobytes()).hexdigest(),
            "precision": params.runtime.precision, "chunk": params.features.chunk_rows, "split": split}
    return paths.resume("features") / hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def embed_chunks(params: Params, model, spec: dict, device, split: str, frame: pl.DataFrame) -> list[Path]:
    """The split's embeddings as .npy chunk files, computing only those a killed run did not finish."""
    folder = chunk_folder(params, spec, split, frame)
    size, generic = params.features.chunk_rows, params.roles.generic
    files = []
    for i, start in enumerate(range(0, frame.height, size)):
        file = folder / f"{i:05d}.npy"
        if not file.is_file():
            part = frame.slice(start, size)
            emb = embed_sources(model.visual, image_sources(generic, part), View.of(spec), device,
                                params.features.batch_size, params.runtime.precision, params.runtime.num_workers,
                                f"teacher {generic}/{split} {i + 1}/{-(-frame.height // size)}", part["path"].to_list())
            with pio.atomic_path(file) as tmp, tmp.open("wb") as fh:
                np.save(fh, emb)
        files.append(file)
    return files


def replay_features(params: Params, model, spec: dict, device, out: Path) -> list[Path]:
    """Teacher features of the replay train and val splits (Parquet + the train split's .npy)."""
    generic, folders = params.roles.generic, []
    for split in ("train", "val"):
        frame = replay_frame(params, split, columns=["id", "label", "subset", "image", "path"])
        if split == "val":  # only what checkpoint selection uses
            frame = leading_share(frame, params.roles.generic_val_fraction)
        files = embed_chunks(params, model, spec, device, split, frame)
        size = params.features.chunk_rows

        def chunks(files=files, frame=frame):
            for i, file in enumerate(files):
                part = frame.slice(i * size, size)
                yield part["id"].to_numpy(), part["label"].to_numpy(), np.load(file), {"subset": part["subset"].to_list()}
        name = paths.split_file(generic, split)
        rows = pio.write_embedding_chunks(out / name, chunks, spec_metadata(spec, dataset=generic, split=split),
                                          params.features.dtype, out / name.replace(".parquet", ".npy")
                                          if split == "train" else None)
        folders.append(files[0].parent if files else None)
        print(f"[features] {generic}/{split}: {rows} teacher embeddings ({params.features.dtype})")
    return [f for f in folders if f is not None]


def text_features(params: Params, model, spec: dict, device, out: Path) -> None:
    """Caption embeddings of each image-text set; class prompts of each zero-shot set and of the replay."""
    tokenizer, batch = tokenizer_for(spec["model"]), params.features.batch_size
    for name, es in params.eval.image_text.items():
        frame = split_frame(params, es.dataset, es.split, es.subset, ["id", "captions"]).explode("captions")
        texts = frame["captions"].to_list()
        emb = embed_texts(model, tokenizer, texts, batch_size=batch, device=device)
        pio.write_embeddings(out / f"{name}__captions.parquet", frame["id"].to_numpy(),
                             np.full(len(texts), -1), emb, spec_metadata(spec, set=name), caption=texts)
        print(f"[features] {name}: {len(texts)} captions")
    prompt_sets: dict[str, Any] = {f"{name}__prompts.parquet": split_frame(params, es.dataset, es.split, es.subset,
                                                                           ["label", "class_name"])
                                   for name, es in params.eval.zero_shot.items()}
    prompt_sets[paths.split_file(params.roles.generic, "train", "prompts")] = replay_frame(params, "train",
                                                                                          ["label", "class_name"])
    for file, frame in prompt_sets.items():
        classes = frame.unique().sort("label")
        prompts = class_prompts(classes["class_name"].to_list(), params.eval.prompt_template)
        emb = embed_texts(model, tokenizer, prompts, batch_size=batch, device=device)
        pio.write_embeddings(out / file, np.arange(len(prompts)), classes["label"].to_numpy(), emb,
                             spec_metadata(spec, file=file), prompt=prompts)
        print(f"[features] {file}: {len(prompts)} class prompts")


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    model, spec = load_teacher(device)
    with pio.atomic_path(paths.features(), directory=True) as out:
        done = replay_features(params, model, spec, device, out)
        text_features(params, model, spec, device, out)
    for folder in done:  # written: nothing left to resume
        shutil.rmtree(folder, ignore_errors=True)
