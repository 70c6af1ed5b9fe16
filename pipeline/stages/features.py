"""Stage `features`: run the frozen teacher once over what every method shares.

- `<generic>__train__images.parquet`: distillation targets f0(x) of the replay train split,
  eval view (as the reference precomputes them: docs/method.md#what-is-trained-on-what), looked up by id.
- `<generic>__val__images.parquet`: teacher features of the generic val split (for reference).
- `<set>__captions.parquet`: the frozen text tower over each image-text set's captions.
- `<set>__prompts.parquet`: class prompts of each zero-shot set.
- `<generic>__train__prompts.parquet`: class prompts of the replay train classes (LwF, EWC, GIFT).
Computed once; every fine-tuning method reads them, none recomputes them.
"""
from __future__ import annotations

import argparse

import numpy as np

from pipeline import io as pio
from pipeline import paths
from pipeline.config import load_params
from pipeline.lib.models import embed_texts, resolve_device, set_threads, tokenizer_for
from pipeline.lib.prompts import class_prompts
from pipeline.stages.common import image_sources, leading_share, replay_frame, spec_metadata, split_frame
from pipeline.lib.embedding import View, embed_sources
from pipeline.stages.encoders import load_teacher


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    model, spec = load_teacher(device)
    tokenizer = tokenizer_for(spec["model"])
    generic = params.roles.generic
    batch = params.features.batch_size
    with pio.atomic_path(paths.features(), directory=True) as out:
        for split in ("train", "val"):
            frame = replay_frame(params, split, columns=["id", "label", "subset", "image", "path"])
            if split == "val":  # only what checkpoint selection uses
                frame = leading_share(frame, params.roles.generic_val_fraction)
            emb = embed_sources(model.visual, image_sources(generic, frame), View.of(spec), device, batch,
                                params.runtime.precision, params.runtime.num_workers, f"teacher {generic}/{split}",
                                frame["path"].to_list())
            pio.write_embeddings(out / paths.split_file(generic, split), frame["id"].to_numpy(),
                                 frame["label"].to_numpy(), emb, spec_metadata(spec, dataset=generic, split=split),
                                 subset=frame["subset"].to_list())
            print(f"[features] {generic}/{split}: {emb.shape[0]} x {emb.shape[1]} teacher embeddings")
        for name, es in params.eval.image_text.items():
            frame = split_frame(params, es.dataset, es.split, es.subset, ["id", "captions"]).explode("captions")
            texts = frame["captions"].to_list()
            emb = embed_texts(model, tokenizer, texts, batch_size=batch, device=device)
            pio.write_embeddings(out / f"{name}__captions.parquet", frame["id"].to_numpy(),
                                 np.full(len(texts), -1), emb, spec_metadata(spec, set=name), caption=texts)
            print(f"[features] {name}: {len(texts)} captions")
        # class prompts: each zero-shot set's, and the replay train classes' (LwF logits, EWC Fisher, GIFT)
        prompt_sets = {f"{name}__prompts.parquet": split_frame(params, es.dataset, es.split, es.subset,
                                                               ["label", "class_name"])
                       for name, es in params.eval.zero_shot.items()}
        prompt_sets[paths.split_file(generic, "train", "prompts")] = replay_frame(params, "train", ["label", "class_name"])
        for file, frame in prompt_sets.items():
            classes = frame.unique().sort("label")
            prompts = class_prompts(classes["class_name"].to_list(), params.eval.prompt_template)
            emb = embed_texts(model, tokenizer, prompts, batch_size=batch, device=device)
            pio.write_embeddings(out / file, np.arange(len(prompts)), classes["label"].to_numpy(), emb,
                                 spec_metadata(spec, file=file), prompt=prompts)
            print(f"[features] {file}: {len(prompts)} class prompts")
