"""Images and sampling: decoding errors name the file, views match the reference, batches resume."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.lib.data import ImageDataset, StepBatches, random_crop_flip, step_generator
from pipeline.lib.images import ImageError, decode_image, eval_view


def png(mode: str, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "RGB", "I;16"])
def test_non_rgb_images_are_converted(mode: str) -> None:
    assert decode_image(png(mode)).mode == "RGB"


def test_corrupt_image_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        decode_image(str(bad))
    with pytest.raises(ImageError, match="cat_017"):
        ImageDataset([b"garbage"], 8, names=["cat_017.png"])[0]


def test_eval_view_resizes_shorter_side_then_centre_crops() -> None:
    img = Image.fromarray(np.arange(60 * 90 * 3, dtype=np.uint32).reshape(60, 90, 3).astype(np.uint8))
    out = eval_view(img, 30)
    assert out.size == (30, 30)
    ref = img.resize((45, 30), Image.BILINEAR).crop((7, 0, 37, 30))
    assert np.array_equal(np.asarray(out), np.asarray(ref))


def test_step_batches_are_a_pure_function_of_the_step() -> None:
    sampler = StepBatches(n=50, batch_size=16, seed=3)
    first = [sampler.indices(s) for s in range(10)]
    again = StepBatches(n=50, batch_size=16, seed=3)
    assert all(np.array_equal(a, again.indices(s)) for s, a in enumerate(first))
    # every epoch is a permutation: 50 consecutive draws cover everything once
    flat = np.concatenate(first)[:50]
    assert sorted(flat.tolist()) == list(range(50))
    # data-parallel ranks partition the global batch
    parts = [sampler.indices(7, r, 2) for r in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == sorted(sampler.indices(7).tolist())


def test_crop_flip_is_deterministic_per_step() -> None:
    batch = torch.randint(0, 255, (4, 3, 12, 12), dtype=torch.uint8)
    a = random_crop_flip(batch, 8, step_generator(0, 5), hflip=True)
    b = random_crop_flip(batch, 8, step_generator(0, 5), hflip=True)
    c = random_crop_flip(batch, 8, step_generator(0, 6), hflip=True)
    assert a.shape == (4, 3, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("global_size", [6, 7])
def test_each_rank_gets_the_crops_of_its_share_of_the_global_batch(global_size: int) -> None:
    batch = torch.randint(0, 255, (global_size, 3, 12, 12), dtype=torch.uint8)
    whole = random_crop_flip(batch, 8, step_generator(3, 9), hflip=True)
    for rank in range(2):
        share = random_crop_flip(batch[rank::2], 8, step_generator(3, 9), True, rank, 2, global_size)
        assert torch.equal(share, whole[rank::2])
    with pytest.raises(ValueError, match="rank 1/2"):
        random_crop_flip(batch[:2], 8, step_generator(3, 9), True, 1, 2, global_size)
