"""Images in, tensors out: datasets of the reference's train/eval views, augmentation, a resumable sampler.

Preprocessing follows the reference (docs/method.md#views-and-splits): train = resize to R×R (aspect not kept) → random crop S → optional
flip; eval = resize shorter side to S (bilinear) → centre crop S. The deterministic part (decode +
resize) runs per image in the Dataset; the random part (crop, flip) runs per batch on the device
with a generator seeded by (seed, step), so a resumed run draws exactly the same augmentations.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from pipeline.lib.images import ImageSource, decode_image, eval_view, train_base_view


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB → uint8 [3, H, W]."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


CACHE_LIMIT_BYTES = 1 << 30


class ImageDataset(torch.utils.data.Dataset):
    """Items → uint8 [3, s, s] in the eval view (`mode='eval'`) or the train base view (`'train'`).

    The view is deterministic, so a dataset whose views fit in `cache_limit_bytes` (the embedded
    world's 13k 37-px images: 50 MB) decodes and resizes each image once, not once per epoch; a
    real dataset (SOP at 256 px: 9 GB) is decoded every time.
    """

    def __init__(self, sources: Sequence[ImageSource], size: int, mode: str = "eval",
                 names: Sequence[str] | None = None, cache_limit_bytes: int = CACHE_LIMIT_BYTES):
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
        self.sources, self.size, self.mode, self.names = sources, size, mode, names
        self._cache: dict[int, torch.Tensor] | None = \
            {} if len(sources) * 3 * size * size <= cache_limit_bytes else None

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        img = decode_image(self.sources[i], self.names[i] if self.names is not None else f"item {i}")
        view = eval_view(img, self.size) if self.mode == "eval" else train_base_view(img, self.size)
        tensor = to_uint8_tensor(view)
        if self._cache is not None:
            self._cache[i] = tensor
        return tensor


def random_crop_flip(batch: torch.Tensor, size: int, generator: torch.Generator, hflip: bool,
                     rank: int = 0, world: int = 1, global_size: int | None = None) -> torch.Tensor:
    """Random size×size crop per image (+ horizontal flip with p=0.5) of a uint8 [B,3,R,R] batch.

    Under data parallelism a rank holds images `rank::world` of a global batch of `global_size`
    (StepBatches): crops are drawn for the whole global batch and this rank's share taken, so every
    image gets the same crop whatever the number of processes.
    """
    b, _, r, _ = batch.shape
    n = b if global_size is None else global_size
    if len(range(rank, n, world)) != b:
        raise ValueError(f"rank {rank}/{world} of a global batch of {n} holds {len(range(rank, n, world))} "
                         f"images, got {b}")
    offsets = torch.randint(0, r - size + 1, (n, 2), generator=generator)[rank::world]
    flips = (torch.rand(n, generator=generator) < 0.5)[rank::world]
    out = torch.stack([batch[i, :, y:y + size, x:x + size] for i, (y, x) in enumerate(offsets.tolist())])
    if hflip:
        out[flips] = out[flips].flip(-1)
    return out


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [B,3,H,W] → float, scaled to [0,1] then standardised with the model's mean/std."""
    m = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - m) / s


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, stream): resumption-safe randomness."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + stream * 104_729) % (2**63))


@lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of one epoch, computed once (52 ms for 1M items: it would cost minutes per run if
    recomputed at every step); read-only, as it is shared."""
    perm = np.random.default_rng((seed, epoch)).permutation(n)
    perm.flags.writeable = False
    return perm


@dataclass
class StepBatches:
    """Batch indices as a pure function of the step: epoch-wise permutations of range(n).

    The sampler's whole state is the step counter, so a checkpoint at step t resumes with the
    exact batches an uninterrupted run would have drawn. For data parallelism each rank takes
    `indices[rank::world]` of the global batch.
    """
    n: int
    batch_size: int
    seed: int

    def _perm(self, epoch: int) -> np.ndarray:
        return epoch_permutation(self.n, self.seed, epoch)

    def indices(self, step: int, rank: int = 0, world: int = 1) -> np.ndarray:
        start = step * self.batch_size
        first, last = start // self.n, (start + self.batch_size - 1) // self.n
        pool = np.concatenate([self._perm(e) for e in range(first, last + 1)])
        offset = start - first * self.n
        return pool[offset:offset + self.batch_size][rank::world]


def iterate_batches(dataset: torch.utils.data.Dataset, sampler: StepBatches, steps: Sequence[int],
                    num_workers: int = 0, pin_memory: bool = False, rank: int = 0, world: int = 1
                    ) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Yield (uint8 images, indices) for the given steps, decoding with DataLoader workers."""
    batches = [sampler.indices(s, rank, world).tolist() for s in steps]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                                         pin_memory=pin_memory, persistent_workers=False)
    for idx, images in zip(batches, loader):
        yield images, np.asarray(idx)


def eval_loader(sources: Sequence[ImageSource], size: int, batch_size: int, num_workers: int = 0,
                names: Sequence[str] | None = None) -> torch.utils.data.DataLoader:
    """Ordered DataLoader of eval views (for embedding whole splits)."""
    return torch.utils.data.DataLoader(ImageDataset(sources, size, "eval", names), batch_size=batch_size,
                                       shuffle=False, num_workers=num_workers)
