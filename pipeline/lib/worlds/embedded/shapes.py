"""Shapes: one coloured shape per scene on a muted textured background, with captions true of it."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from pipeline.lib.worlds.embedded.common import COLORS, SUPERSAMPLE, ImageSet, article, colourise

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
SIZES: tuple[str, ...] = ("small", "large")
# Four corners and the centre: each ~9 px from the others at 32 px, so the word is never a guess.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.3, 0.3), "top right": (0.7, 0.3), "center": (0.5, 0.5),
    "bottom left": (0.3, 0.7), "bottom right": (0.7, 0.7),
}
_JITTER = 0.025   # × image size, of the position
# × image size: small is still big enough (~8 px across at 32 px) to tell a hexagon from a circle;
# every large shape is visibly bigger than every small one (≥ 12 vs ≤ 10 px across at 32 px) and
# still fits in a corner with the jitter.
_RADIUS = {"small": (0.115, 0.14), "large": (0.205, 0.235)}
_WHERE = {  # phrases true of each position
    "top left": ("in the top left corner", "at the top left", "in the upper left", "on the left, near the top"),
    "top right": ("in the top right corner", "at the top right", "in the upper right", "on the right, near the top"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left", "on the left, near the bottom"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right", "on the right, near the bottom"),
    "center": ("in the center", "in the middle", "in the center of the image", "in the middle of the picture"),
}
_TEMPLATES = (  # none may contain another shape's or colour's name (e.g. "across", "colored" -> "red")
    "{a_size} {size} {color} {shape} {where}",
    "a picture of {a_size} {size} {color} {shape}",
    "a photo of {a_color} {color} {shape} {where}",
    "{size} {color} {shape}, {pos}",
    "there is {a_size} {size} {color} {shape} {where}",
    "{a_color} {color} {shape} on a plain background",
    "one {size} {shape} in {color}",
    "{a_shape} {shape} that is {color}, {where}",
    "{a_size} {size} {shape} painted {color}",
    "an image with {a_size} {size} {color} {shape}",
)


def shape_class_names() -> list[str]:
    """The 64 shape × colour class names; label = shape index × 8 + colour index."""
    return [f"{c} {s}" for s in SHAPES for c in COLORS]


def shape_attributes(n: int, seed: int) -> list[dict[str, str]]:
    """Per image of `render_shapes(n, seed)`: {'shape', 'color', 'size', 'position'} (names)."""
    attr_rng, _ = np.random.default_rng(seed).spawn(2)   # the same streams render_shapes uses
    return _draw_attributes(n, attr_rng)


def _draw_attributes(n: int, rng: np.random.Generator) -> list[dict[str, str]]:
    colors, positions = list(COLORS), list(POSITIONS)
    s, c = rng.integers(len(SHAPES), size=n), rng.integers(len(colors), size=n)
    z, p = rng.integers(len(SIZES), size=n), rng.integers(len(positions), size=n)
    return [{"shape": SHAPES[a], "color": colors[b], "size": SIZES[d], "position": positions[e]}
            for a, b, d, e in zip(s, c, z, p)]


def _outline(shape: str, cx: float, cy: float, r: float, theta: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of "radius" r centred at (cx, cy), rotated by theta (rad).

    r is about half the shape's extent (a circle's radius), so that "small" and "large" mean the
    same visible size whatever the shape; the square is a little smaller (its corners fill more).
    """
    if shape == "square":      # half-side 0.88 r
        ang = np.deg2rad([45, 135, 225, 315]); rad = np.full(4, r * 0.88 * np.sqrt(2))
    elif shape == "diamond":   # a tall rhombus: distinct from a square even with the small rotation
        ang = np.deg2rad([0, 90, 180, 270]); rad = np.array([0.72, 1.0, 0.72, 1.0]) * r
    elif shape == "triangle":
        ang = np.deg2rad([-90, 30, 150]); rad = np.full(3, r * 1.1)
    elif shape == "hexagon":
        ang = np.deg2rad(np.arange(0, 360, 60)); rad = np.full(6, r)
    elif shape == "star":
        ang = np.deg2rad(-90 + 36 * np.arange(10)); rad = np.where(np.arange(10) % 2 == 0, r * 1.08, r * 0.45)
    elif shape == "cross":     # a plus sign of arm half-width w
        w = 0.36
        xy = np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
                       (-1, w), (-1, -w), (-w, -w)]) * r * 0.95
        ang, rad = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])
    else:
        raise ValueError(f"no outline for shape {shape!r}")
    ang = ang + theta
    return [(float(cx + q * np.cos(a)), float(cy + q * np.sin(a))) for a, q in zip(ang, rad)]


def _shape_mask(attrs: dict[str, str], size: int, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased coverage [size, size] of one shape with small jitter of size, place and angle."""
    big = size * SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(*_RADIUS[attrs["size"]]) * big
    px, py = POSITIONS[attrs["position"]]
    cx, cy = (px + rng.uniform(-_JITTER, _JITTER)) * big, (py + rng.uniform(-_JITTER, _JITTER)) * big
    theta = np.deg2rad(rng.uniform(-10.0, 10.0))
    shape = attrs["shape"]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":      # thick enough to stay a ring (visible hole) at 32 px
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        hole = r * 0.58
        draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=0)
    else:
        draw.polygon(_outline(shape, cx, cy, r, theta), fill=255)
    return np.asarray(img.reduce(SUPERSAMPLE), np.float32) / 255.0


def _background(rng: np.random.Generator, obj: np.ndarray) -> np.ndarray:
    """A muted colour: a mid grey with a faint tint (channel spread ≤ 36, so it never reads as one of
    the named colours), ≥ 110 RGB levels from the object's colour."""
    while True:
        base = rng.uniform(55, 175) + rng.uniform(-18.0, 18.0, 3)
        if np.linalg.norm(base - obj) >= 110:
            return np.clip(base, 0, 255)


def shape_captions(attrs: dict[str, str], rng: np.random.Generator, n: int = 5) -> list[str]:
    """`n` different true captions: the class phrase first, then random templates and wordings."""
    shape, color, size_name, position = attrs["shape"], attrs["color"], attrs["size"], attrs["position"]
    first = f"{article(color)} {color} {shape}"
    picks = rng.choice(len(_TEMPLATES), size=min(n - 1, len(_TEMPLATES)), replace=False)
    out = [first]
    for t in picks:
        where = _WHERE[position][int(rng.integers(len(_WHERE[position])))]
        out.append(_TEMPLATES[t].format(size=size_name, color=color, shape=shape, where=where, pos=position,
                                        a_size=article(size_name), a_color=article(color),
                                        a_shape=article(shape)))
    return out


def render_shapes(n: int, seed: int, size: int = 32) -> ImageSet:
    """`n` scenes, one shape each, on a muted textured background; label = shape × colour (64
    classes, `shape_class_names()`); 5 true captions each. `shape_attributes(n, seed)` gives each
    image's shape / color / size / position."""
    attr_rng, rng = np.random.default_rng(seed).spawn(2)
    attrs = _draw_attributes(n, attr_rng)
    colors = list(COLORS)
    masks = np.zeros((n, size, size), np.float32)
    fg = np.zeros((n, 3), np.float32)
    bg = np.zeros((n, 3), np.float32)
    captions: list[list[str]] = []
    for i, a in enumerate(attrs):
        masks[i] = _shape_mask(a, size, rng)
        fg[i] = np.clip(np.array(COLORS[a["color"]]) + rng.uniform(-12, 12, 3), 0, 255)
        bg[i] = _background(rng, fg[i])
        captions.append(shape_captions(a, rng))
    # Texture: a gentle linear gradient plus pixel noise on the background only (the object is flat).
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    slope = rng.uniform(-14, 14, (n, 2, 1, 1)).astype(np.float32)
    grad = slope[:, 0] * xx + slope[:, 1] * yy
    noise = rng.normal(0.0, 1.0, (n, size, size, 3)).astype(np.float32) * rng.uniform(0, 7, (n, 1, 1, 1)).astype(np.float32)
    texture = (grad[..., None] + noise) * (1.0 - masks[..., None])
    labels = np.array([SHAPES.index(a["shape"]) * len(colors) + colors.index(a["color"]) for a in attrs], np.int64)
    return ImageSet(colourise(masks, fg, bg, texture), labels, shape_class_names(), captions)

