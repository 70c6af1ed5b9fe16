"""Encoders in the stages: loading the pretrained teacher (whole, or its vision tower alone) or a
method's fine-tuned tower, and embedding the evaluation splits (`pipeline.lib.embedding`)."""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import polars as pl
import torch

from pipeline import paths
from pipeline.config import Params
from pipeline.lib.embedding import View, embed_sources
from pipeline.lib.models import load_clip, load_visual
from pipeline.stages.common import image_sources, needed_splits, read_teacher_spec, split_frame


def load_teacher(device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The pretrained VLM (both towers), eval mode, on `device`."""
    spec = read_teacher_spec()
    model = load_clip(spec["model"], spec.get("pretrained"))
    return model.to(device).eval(), spec


def load_teacher_visual(device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The pretrained vision tower alone, eval mode, on `device` (stages that never touch text)."""
    spec = read_teacher_spec()
    return load_visual(spec["model"], spec.get("pretrained")).to(device).eval(), spec


def load_method_visual(method: str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """One method's fine-tuned vision tower (the teacher's architecture + `data/runs/<method>/visual.pt`)."""
    visual, spec = load_teacher_visual("cpu")
    checkpoint = paths.checkpoint(method)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"missing {checkpoint}: run `python -m pipeline finetune {method}` first")
    visual.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return visual.to(device).eval(), spec


def embed_eval_splits(visual: torch.nn.Module, params: Params, spec: dict[str, Any], device: torch.device,
                      label: str) -> Iterator[tuple[str, str, pl.DataFrame, np.ndarray]]:
    """(dataset, split, rows, embeddings) of every split an evaluation reads, eval view."""
    for dataset, split in needed_splits(params):
        frame = split_frame(params, dataset, split, columns=["id", "label", "subset", "image", "path"])
        emb = embed_sources(visual, image_sources(dataset, frame), View.of(spec), device, params.features.batch_size,
                            params.runtime.precision, params.runtime.num_workers, f"{label} {dataset}/{split}",
                            frame["path"].to_list())
        yield dataset, split, frame, emb
