"""LoRA on the vision tower with `peft`: low-rank updates of the attention and MLP weights, θ0 frozen.

The targets are chosen by module name inside the transformer blocks, so both vision towers open_clip
builds are covered:
- open_clip `VisionTransformer` (`transformer.resblocks.N`): the attention is an
  `nn.MultiheadAttention`, which peft wraps as a whole (its LoRA layer adapts `in_proj_weight` and
  `out_proj` together; peft cannot target one of them alone), and the MLP's `c_fc`, `c_proj`;
- timm towers (`TimmModel`, e.g. `ViT-B-16-SigLIP`: `trunk.blocks.N`): `attn.qkv`, `attn.proj`,
  `mlp.fc1`, `mlp.fc2`.
Anything outside the blocks (patch embedding, attention-pool head, projection) stays frozen. peft's
defaults: B = 0, so training starts exactly at θ0; A Kaiming-uniform; no bias updates; scale α/r.
For evaluation the updates are merged and the wrappers unloaded (`merge_and_unload`), so the
checkpoint holds the tower's original tensor names and later stages read it like any other.
"""
from __future__ import annotations

import copy
import re

import torch
from torch import nn

BLOCK_CONTAINERS = ("resblocks", "blocks")  # open_clip VisionTransformer | timm ViT
_IN_BLOCK = re.compile(rf"(^|\.)({'|'.join(BLOCK_CONTAINERS)})\.\d+\.")


def lora_targets(visual: nn.Module) -> list[str]:
    """Names of the attention and MLP modules of every transformer block, as peft `target_modules`."""
    attention = {name for name, m in visual.named_modules() if isinstance(m, nn.MultiheadAttention)}
    targets = []
    for name, module in visual.named_modules():
        if not _IN_BLOCK.search(name):
            continue
        if name in attention:
            targets.append(name)  # in_proj + out_proj through peft's MultiheadAttention layer
        elif isinstance(module, nn.Linear) and name.rpartition(".")[0] not in attention:
            targets.append(name)  # MLP layers, timm's qkv / proj (an MHA's out_proj comes with the MHA)
    return targets


def add_lora(visual: nn.Module, rank: int, alpha: float, seed: int = 0) -> nn.Module:
    """The tower wrapped with trainable LoRA updates (θ0 frozen); the global RNG is left untouched."""
    from peft import LoraConfig, LoraModel

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    targets = lora_targets(visual)
    if not targets:
        raise ValueError(f"no attention / MLP modules found in the blocks ({' or '.join(BLOCK_CONTAINERS)}.N) "
                         f"of {type(visual).__name__} for LoRA")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LoraModel(visual, config, "default")


def merged_tower(model: nn.Module) -> nn.Module:
    """A plain copy of the tower with the LoRA updates folded in (the training model is not touched)."""
    return copy.deepcopy(model).merge_and_unload()


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The merged tower's weights under the original tensor names, on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in merged_tower(model).state_dict().items()}
