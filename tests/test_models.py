"""Loading a real open_clip architecture from a local checkpoint file, and the offline fast-fail."""
from __future__ import annotations

import os
from pathlib import Path

import open_clip
import pytest
import torch

from pipeline.lib.models import embed_images, image_mean_std, image_size_of, load_clip, load_visual
from tests.real_formats import make_tiny_open_clip


def test_builtin_architecture_loads_a_local_checkpoint_file(tmp_path: Path) -> None:
    model = open_clip.create_model("ViT-S-32")
    with torch.no_grad():
        model.visual.proj.mul_(-2.0)  # not the random init a fresh model would draw
    checkpoint = tmp_path / "vit_s_32.pt"
    torch.save(model.state_dict(), checkpoint)
    loaded = load_clip("ViT-S-32", str(checkpoint)).eval()
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert image_size_of(loaded) == 224 and len(image_mean_std(loaded)[0]) == 3
    with torch.no_grad():
        emb = embed_images(loaded.visual, torch.randn(2, 3, 224, 224))
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2))


def test_hub_weights_fail_fast_offline_with_what_to_do() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=1.*local checkpoint file"):
        load_clip("ViT-B-16-SigLIP", "webli")


def test_a_missing_checkpoint_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="ViT-S-32"):
        load_clip("ViT-S-32", str(tmp_path / "missing.pt"))


def test_the_vision_tower_alone_loads_like_the_whole_model(tmp_path: Path) -> None:
    folder = make_tiny_open_clip(tmp_path / "tiny")
    whole = load_clip(f"local-dir:{folder}").visual.eval()
    alone = load_visual(f"local-dir:{folder}").eval()
    assert whole.state_dict().keys() == alone.state_dict().keys()
    for name, value in whole.state_dict().items():
        assert torch.equal(value, alone.state_dict()[name]), name
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(embed_images(whole, x), embed_images(alone, x))
