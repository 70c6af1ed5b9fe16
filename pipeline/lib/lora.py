"""LoRA on the vision tower: low-rank updates of the attention and MLP weights, θ0 frozen.

Each target weight W becomes W + (α/r)·B·A through `torch.nn.utils.parametrize`, so the tower's own
forward (open_clip's attention reads `in_proj_weight` directly) needs no change. B starts at zero:
training starts exactly at θ0. For evaluation the updates are merged into plain weights with the
tower's original tensor names, so every later stage reads a LoRA model like any other checkpoint.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize


class LowRankDelta(nn.Module):
    """W ↦ W + (α/r)·B·A with A [r, in] random, B [out, r] zero."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.A = nn.Parameter(torch.randn(rank, in_features, generator=generator) / math.sqrt(in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A).to(weight.dtype)


def lora_targets(visual: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """(module name, module, tensor name) of every attention and MLP weight in the transformer blocks."""
    for name, module in visual.named_modules():
        if ".resblocks." not in f".{name}.":
            continue
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            yield name, module, "in_proj_weight"
        elif isinstance(module, nn.Linear):  # attention out_proj, MLP c_fc / c_proj
            yield name, module, "weight"


def add_lora(visual: nn.Module, rank: int, alpha: float, seed: int = 0) -> list[nn.Parameter]:
    """Freeze the tower and attach LoRA updates in place; returns the trainable LoRA tensors."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    visual.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    trainable = []
    for _, module, tensor in list(lora_targets(visual)):
        out_f, in_f = getattr(module, tensor).shape
        delta = LowRankDelta(out_f, in_f, rank, alpha, gen).to(getattr(module, tensor).device)
        parametrize.register_parametrization(module, tensor, delta)
        trainable += [delta.A, delta.B]
    if not trainable:
        raise ValueError("no attention / MLP weights found under `resblocks` for LoRA")
    return trainable



def merged_state_dict(visual: nn.Module) -> dict[str, torch.Tensor]:
    """The tower's weights with LoRA updates folded in, under the original tensor names (CPU).

    Read through the parametrizations (W + (α/r)·B·A) rather than removing them:
    `remove_parametrizations` cannot restore nn.MultiheadAttention's `in_proj_weight`.
    """
    state = {k: v for k, v in visual.state_dict().items() if ".parametrizations." not in f".{k}"}
    with torch.no_grad():
        for name, module in visual.named_modules():
            if parametrize.is_parametrized(module):
                for tensor in module.parametrizations.keys():
                    state[f"{name}.{tensor}" if name else tensor] = getattr(module, tensor)
    return {k: v.detach().cpu().clone() for k, v in state.items()}
