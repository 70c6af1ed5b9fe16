"""EWC's diagonal empirical Fisher of θ0, from per-sample gradients on labelled generic images."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.lib import losses

FISHER_CHUNK_FLOATS = 2 ** 28  # per-sample gradients held at once (1 GiB): ViT-B/16 → 3 samples per vmap call
FISHER_CHUNK_MAX = 32          # and at most this many samples per call (larger calls were slower on CPU)


def estimate_fisher(visual: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    prototypes: torch.Tensor, scale: float) -> list[torch.Tensor]:
    """EWC's diagonal empirical Fisher of θ0 on generic data, unnormalised: F = (1/N) Σ_n (∇θ log p(y_n|x_n))².

    The log-likelihood is the zero-shot classification of each image among the generic class prompts
    with the teacher's logit scale (what the image tower must keep to stay aligned with the frozen text
    tower); batches are (normalised eval views, class rows). Gradients are per SAMPLE (the square of a
    batch-mean gradient is not the Fisher), computed with torch.func's vmap(grad) over a few samples at
    a time (`FISHER_CHUNK_*`): the same numbers as a loop of single-image backward passes (a test
    checks it), ~3× faster on CPU. Returns one tensor per `vision_params(visual)` entry; touches no `.grad`.
    """
    import warnings

    from torch.func import functional_call, grad, vmap

    visual.eval()
    names = [name for name, _ in sorted(visual.named_parameters(), key=lambda kv: kv[0])]
    theta = {name: p.detach() for name, p in visual.named_parameters()}
    chunk = max(1, min(FISHER_CHUNK_MAX, FISHER_CHUNK_FLOATS // sum(p.numel() for p in theta.values())))

    def log_loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = F.normalize(functional_call(visual, params, (x[None],)).float(), dim=-1, eps=1e-12)
        return F.cross_entropy(losses.zero_shot_logits(emb, prototypes, scale), y[None])

    per_sample_grad = vmap(grad(log_loss), in_dims=(None, 0, 0))

    def per_sample() -> Iterable[list[torch.Tensor]]:
        for x, y in batches:
            for start in range(0, len(x), chunk):
                with warnings.catch_warnings():  # vmap has no batching rule for fused attention: it loops there
                    warnings.filterwarnings("ignore", message=".*performance drop.*")
                    g = per_sample_grad(theta, x[start:start + chunk], y[start:start + chunk])
                for i in range(len(x[start:start + chunk])):
                    yield [g[name][i] for name in names]

    return losses.mean_squared_gradients(per_sample())
