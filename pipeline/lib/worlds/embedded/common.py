"""What every embedded domain shares: the image-set type, the named colours, anti-aliased drawing.

Everything in this package is a pure function of its arguments and seed; the only files read are
the fonts and the animal_mnist data inside installed packages; nothing is written.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.lib.prompts import article  # captions say 'an orange circle', as prompts do


@dataclass
class ImageSet:
    """Images with labels and captions; the shared return type of every world."""

    images: np.ndarray          # uint8 [N, S, S, 3]
    labels: np.ndarray          # int64 [N], index into class_names
    class_names: list[str]      # human-readable, used in text prompts
    captions: list[list[str]]   # per image, natural-language captions true of that image (may be [])


def package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it (animal_mnist's modules import TF)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the embedded world needs the installed package '{package}'")
    return Path(next(iter(spec.submodule_search_locations)))


# Saturated colours with everyday names, far apart in RGB so that 32-px anti-aliasing and the
# ±12 jitter cannot move one into another's neighbourhood.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 25, 30), "orange": (255, 140, 0), "yellow": (250, 225, 35), "green": (35, 170, 55),
    "blue": (30, 70, 235), "purple": (135, 45, 195), "pink": (255, 120, 205), "white": (248, 248, 248),
}
SUPERSAMPLE = 4     # draw at 4× and box-filter down: anti-aliased edges at 32 px


def colourise(masks: np.ndarray, fg: np.ndarray, bg: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Blend per-image stroke / background colours through coverage masks, add noise, to uint8."""
    m = masks[..., None]
    out = bg[:, None, None, :] * (1.0 - m) + fg[:, None, None, :] * m + noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

