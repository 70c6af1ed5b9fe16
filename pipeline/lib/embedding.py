"""Embedding images with a vision tower in the reference's eval view (features, validation, evaluation)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from pipeline.lib.data import eval_loader, normalize
from pipeline.lib.images import ImageSource
from pipeline.lib.models import autocast, embed_images


@dataclass(frozen=True)
class View:
    """What a vision tower expects and gives: input size, normalisation, embedding size, CLIP logit scale."""
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    embed_dim: int = 0
    logit_scale: float = 1.0

    @classmethod
    def of(cls, spec: dict[str, Any]) -> "View":
        """From the teacher stage's spec (`data/teacher/teacher.json`)."""
        return cls(spec["image_size"], tuple(spec["mean"]), tuple(spec["std"]), spec.get("embed_dim", 0),
                   spec.get("logit_scale", 1.0))


@torch.no_grad()
def embed_sources(visual: torch.nn.Module, sources: Sequence[ImageSource], view: View, device: torch.device,
                  batch_size: int, precision: str = "fp32", num_workers: int = 0,
                  desc: str = "embed", names: Sequence[str] | None = None) -> np.ndarray:
    """Eval-view embeddings (float32 [N, D], L2-normalised) of a list of images."""
    visual.eval()
    loader = eval_loader(sources, view.image_size, batch_size, num_workers, names)
    out = []
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=len(loader) < 4):
        x = normalize(batch.to(device), view.mean, view.std)
        with autocast(device, precision):
            out.append(embed_images(visual, x).float().cpu())
    return torch.cat(out).numpy()
