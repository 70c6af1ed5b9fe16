"""Flags (the default fine-grained target): layouts filled with ordered colours, photographed."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from pipeline.lib.worlds.embedded.common import COLORS, SUPERSAMPLE, ImageSet

# Flags: a layout filled with an ordered choice of colours, e.g. a horizontal triband in red, white
# and blue. Fine-grained in the way product variants are: many classes share their colours or their
# layout and differ only in the other or in the order of the colours. A teacher that knows colours
# and stripes recognises part of a flag; telling the 300 apart is what fine-tuning has to add.
FLAG_COLORS: dict[str, tuple[int, int, int]] = {**COLORS, "black": (25, 25, 28)}
_FW, _FH = 150, 100  # the flag's own frame (3:2), in which layouts are drawn as colour-slot indices


def _rect(x0, y0, x1, y1):
    return [(x0 * _FW, y0 * _FH), (x1 * _FW, y0 * _FH), (x1 * _FW, y1 * _FH), (x0 * _FW, y1 * _FH)]


def _band(x0, y0, x1, y1, t):  # a thick line from (x0, y0) to (x1, y1) in frame units, half-width t
    (ax, ay), (bx, by) = (x0 * _FW, y0 * _FH), (x1 * _FW, y1 * _FH)
    dx, dy = bx - ax, by - ay
    n = np.hypot(dx, dy)
    ox, oy = -dy / n * t * _FH, dx / n * t * _FH
    return [(ax + ox, ay + oy), (bx + ox, by + oy), (bx - ox, by - oy), (ax - ox, ay - oy)]


# layout → (number of colours, [(colour slot, polygon or ("ellipse", box)), ...] drawn in order over slot 1)
FLAG_LAYOUTS: dict[str, tuple[int, list]] = {
    "horizontal triband": (3, [(2, _rect(0, 1 / 3, 1, 2 / 3)), (3, _rect(0, 2 / 3, 1, 1))]),
    "vertical triband": (3, [(2, _rect(1 / 3, 0, 2 / 3, 1)), (3, _rect(2 / 3, 0, 1, 1))]),
    "horizontal bicolour": (2, [(2, _rect(0, 0.5, 1, 1))]),
    "vertical bicolour": (2, [(2, _rect(0.5, 0, 1, 1))]),
    "nordic cross": (2, [(2, _rect(0.28, 0, 0.44, 1)), (2, _rect(0, 0.40, 1, 0.60))]),
    "saltire": (2, [(2, _band(0, 0, 1, 1, 0.11)), (2, _band(0, 1, 1, 0, 0.11))]),
    "centred disc": (2, [(2, ("ellipse", (0.5 * _FW - 0.3 * _FH, 0.2 * _FH, 0.5 * _FW + 0.3 * _FH, 0.8 * _FH)))]),
    "canton": (2, [(2, _rect(0, 0, 0.45, 0.5))]),
    "hoist triangle": (3, [(2, _rect(0, 0.5, 1, 1)), (3, [(0, 0), (0.45 * _FW, 0.5 * _FH), (0, _FH)])]),
    "diagonal bicolour": (2, [(2, [(_FW, 0), (_FW, _FH), (0, _FH)])]),
    "bordered": (2, [(2, _rect(0, 0, 1, 0.16)), (2, _rect(0, 0.84, 1, 1)), (2, _rect(0, 0, 0.11, 1)),
                     (2, _rect(0.89, 0, 1, 1))]),
    "five stripes": (2, [(2, _rect(0, 0.2, 1, 0.4)), (2, _rect(0, 0.6, 1, 0.8))]),
}


def _colour_list(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class FlagClass:
    layout: str
    colors: tuple[str, ...]     # one per colour slot, all different

    @property
    def name(self) -> str:
        return f"{self.layout} flag in {_colour_list(self.colors)}"


def all_flag_classes() -> list[FlagClass]:
    """Every layout with every ordered choice of distinct colours (2,160 classes), in a fixed order."""
    from itertools import permutations
    return [FlagClass(layout, colours) for layout, (k, _) in FLAG_LAYOUTS.items()
            for colours in permutations(FLAG_COLORS, k)]


def flag_classes(n_classes: int, seed: int) -> list[FlagClass]:
    """`n_classes` flag classes drawn without replacement (a pure function of the seed), in drawn order."""
    pool = all_flag_classes()
    if not 1 <= n_classes <= len(pool):
        raise ValueError(f"n_classes must be in [1, {len(pool)}], got {n_classes}")
    return [pool[i] for i in np.random.default_rng(seed).choice(len(pool), n_classes, replace=False)]


@lru_cache(maxsize=None)
def _flag_slots(layout: str) -> Image.Image:
    """The layout drawn once in its own frame: pixel value = colour slot (1..k)."""
    img = Image.new("L", (_FW, _FH), 1)
    draw = ImageDraw.Draw(img)
    for slot, shape in FLAG_LAYOUTS[layout][1]:
        if isinstance(shape, tuple) and shape[0] == "ellipse":
            draw.ellipse(shape[1], fill=slot)
        else:
            draw.polygon(shape, fill=slot)
    return img


_FLAG_ASPECTS = (1.5, 5 / 3, 2.0)  # width : height of real flags' common proportions


def _flag_weights(layout: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """[size, size, 4] coverage of background (0) and colour slots 1..3 of one randomly placed flag:
    width 62-85 % of the image, proportions 3:2, 5:3 or 2:1, shifted by ≤ 8 %, rotated by ≤ 15°."""
    big = size * SUPERSAMPLE
    width = rng.uniform(0.62, 0.85) * big
    height = width / _FLAG_ASPECTS[rng.integers(len(_FLAG_ASPECTS))]
    theta = np.deg2rad(rng.uniform(-15, 15))
    centre = big / 2 + rng.uniform(-0.08, 0.08, 2) * big
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inv = np.diag([_FW / width, _FH / height]) @ rot.T    # output → frame, about the centres
    offset = np.array([_FW / 2, _FH / 2]) - inv @ centre
    slots = _flag_slots(layout).transform((big, big), Image.AFFINE, (inv[0, 0], inv[0, 1], offset[0], inv[1, 0],
                                          inv[1, 1], offset[1]), resample=Image.NEAREST, fillcolor=0)
    onehot = np.asarray(slots)[..., None] == np.arange(4)
    return onehot.astype(np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 4).mean((1, 3))


def render_flags(classes: Sequence[FlagClass], per_class: int, seed: int, size: int = 32) -> ImageSet:
    """`per_class` photos of each flag (label = position in `classes`): random size, proportions, place
    and angle, a muted background, lighting between 85 % and 110 % with a colour cast of up to ±12 %
    per channel, a soft fold shading across the cloth, noise."""
    rng = np.random.default_rng(seed)
    n = len(classes) * per_class
    out = np.zeros((n, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
    captions: list[list[str]] = []
    xx = np.linspace(0, 1, size, dtype=np.float32)[None, :, None]
    for i, label in enumerate(labels):
        cls = classes[label]
        w = _flag_weights(cls.layout, size, rng)
        cast = rng.uniform(0.85, 1.10) * rng.uniform(0.88, 1.12, 3)
        palette = np.array([FLAG_COLORS[c] for c in cls.colors], np.float32) * cast
        palette = np.concatenate([palette, np.zeros((3 - len(palette), 3), np.float32)])
        bg = rng.uniform(60, 190) + rng.uniform(-15, 15, 3)
        fold = 1.0 + rng.uniform(0, 0.12) * np.sin(2 * np.pi * (rng.uniform(1, 2.5) * xx + rng.uniform()))
        img = w[..., :1] * bg + (w[..., 1:] @ palette) * fold + rng.normal(0, rng.uniform(0, 6), (size, size, 3))
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        captions.append([f"a {cls.name}", f"a flag with a {cls.layout} layout in {_colour_list(cls.colors)}"])
    return ImageSet(out, labels, [c.name for c in classes], captions)

