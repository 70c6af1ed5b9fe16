"""Images and sampling: decoding errors name the file, views match the reference, batches resume."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import error_line
from pipeline.lib.data import ImageDataset, StepBatches, eval_loader, random_crop_flip, step_generator
from pipeline.lib.images import ImageError, check_image, decode_image, eval_view
from tests.conftest import ROOT, tool_env
from tests.test_sources import bomb_png


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


def test_a_decompression_bomb_is_an_image_error_naming_the_file(tmp_path: Path) -> None:
    bomb = bomb_png(tmp_path / "bomb.png")
    for check in (decode_image, check_image):
        with pytest.raises(ImageError, match=f"cannot decode image {bomb}: DecompressionBombError: Image size "
                                             r"\(225000000 pixels\) exceeds limit"):
            check(str(bomb))


def test_only_the_decode_check_catches_a_truncated_jpeg(tmp_path: Path) -> None:
    ok = tmp_path / "ok.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(ok, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(ok.read_bytes()[:ok.stat().st_size // 2])
    check_image(str(ok), "decode")
    check_image(str(cut), "open")  # the header is intact: Image.verify() does not decode a JPEG
    with pytest.raises(ImageError, match=f"cannot decode image {cut}: OSError: image file is truncated"):
        check_image(str(cut), "decode")
    with pytest.raises(ImageError, match="truncated"):
        decode_image(str(cut))  # what training would have met hours later


def test_a_bad_file_met_by_a_dataloader_worker_is_named_in_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    sources = [str(good), str(bad)]
    with pytest.raises(ImageError) as caught:
        for _ in eval_loader(sources, 16, batch_size=1, num_workers=1, names=["good.png", "bad.jpg"]):
            pass
    assert "DataLoader worker" in str(caught.value) and "Traceback" in str(caught.value)  # torch's wrapping
    line = error_line(caught.value)
    assert line.startswith(f"cannot decode image {bad}: ") and "\n" not in line
    assert error_line(ValueError("plain message")) == "plain message"


def test_search_names_an_oversized_query_image_in_one_line(tmp_path: Path, tiny_params_file: Path) -> None:
    bomb = bomb_png(tmp_path / "bomb.png")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "search", "pretrained", "--image", str(bomb),
                           "--params", str(tiny_params_file)], cwd=tmp_path, capture_output=True, text=True,
                          env={**tool_env(), "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == (f"error [search]: cannot decode image {bomb}: DecompressionBombError: Image size "
                                   "(225000000 pixels) exceeds limit of 178956970 pixels, could be decompression bomb "
                                   "DOS attack.")


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
