"""Patterns: textile-like repeating patterns × colours on three grounds, with captions."""
from __future__ import annotations

import numpy as np

from pipeline.lib.worlds.embedded.common import COLORS, SUPERSAMPLE, ImageSet, article, colourise

# Textile-like repeating patterns: 8 kinds × 8 colours. A domain of its own, with captions that
# describe colour, background, scale and orientation, so it serves image-image retrieval, image-text
# retrieval and zero-shot classification. No kind or template uses a word of the shapes world.
PATTERNS: tuple[str, ...] = ("stripes", "checkerboard", "polka dots", "grid", "zigzag", "waves", "bricks",
                             "speckles")
_ORIENTED = ("stripes", "zigzag", "waves")
_ORIENTATIONS = {"horizontal": 0.0, "vertical": 90.0, "diagonal": 45.0}
_BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (20, 20, 24), "grey": (128, 128, 132),
                                                 "white": (240, 240, 236)}
_PERIOD = {"fine": (0.17, 0.21), "bold": (0.30, 0.36)}   # × image size: about 6 and 10 px at 32 px
_PATTERN_TEMPLATES = (
    "{fg} and {bg} {orient}{pattern}",
    "{scale} {fg} {pattern} on a {bg} background",
    "a {bg} background with {orient}{fg} {pattern}",
    "a textile with {a_scale} {scale} {fg} {pattern} pattern",
    "{pattern} in {fg} over {bg}",
    "a close-up of {a_fg} {fg} and {bg} {pattern} pattern",
    "wallpaper with {orient}{fg} {pattern}",
    "{a_fg} {fg} {pattern} print on {bg}",
)


def pattern_class_names() -> list[str]:
    """The 64 pattern × colour class names; label = pattern index × 8 + colour index."""
    return [f"pattern of {c} {p}" for p in PATTERNS for c in COLORS]


def _draw_pattern_attributes(n: int, rng: np.random.Generator) -> list[dict[str, str]]:
    colors, backs = list(COLORS), list(_BACKGROUNDS)
    out = []
    for _ in range(n):
        pattern, fg = PATTERNS[rng.integers(len(PATTERNS))], colors[rng.integers(len(colors))]
        bg = backs[rng.integers(len(backs))]
        if (fg, bg) == ("white", "white"):  # white on white would not show: a white pattern sits on black
            bg = "black"
        orient = list(_ORIENTATIONS)[rng.integers(len(_ORIENTATIONS))] if pattern in _ORIENTED else ""
        out.append({"pattern": pattern, "color": fg, "background": bg,
                    "scale": ("fine", "bold")[rng.integers(2)], "orientation": orient})
    return out


def _pattern_mask(a: dict[str, str], size: int, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased coverage [size, size] of one pattern: random phase, period within its scale."""
    big = size * SUPERSAMPLE
    period = rng.uniform(*_PERIOD[a["scale"]]) * big
    theta = np.deg2rad(_ORIENTATIONS.get(a["orientation"], 0.0) + rng.uniform(-6, 6))
    yy, xx = (np.mgrid[0:big, 0:big].astype(np.float64) + 0.5)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform()   # across the stripes
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period + rng.uniform()  # along them
    frac = lambda t: t - np.floor(t)  # noqa: E731
    kind = a["pattern"]
    if kind == "stripes":
        mask = frac(u) < 0.5
    elif kind == "checkerboard":
        mask = (np.floor(u) + np.floor(v)) % 2 == 0
    elif kind == "polka dots":
        mask = (frac(u) - 0.5) ** 2 + (frac(v) - 0.5) ** 2 < 0.28 ** 2
    elif kind == "grid":
        mask = (frac(u) < 0.2) | (frac(v) < 0.2)
    elif kind == "zigzag":
        mask = frac(u + 0.5 * np.abs(2 * frac(v) - 1)) < 0.5
    elif kind == "waves":
        mask = frac(u + 0.25 * np.sin(2 * np.pi * v)) < 0.5
    elif kind == "bricks":  # bricks two periods long, every other row shifted by one period; mortar between
        row = np.floor(u)
        mask = (frac(u) > 0.18) & (frac((v + 0.5 * (row % 2)) / 2) > 0.09)
    elif kind == "speckles":  # random specks on a fine lattice, about a third of the cells
        cells = rng.uniform(size=(int(np.ceil(big / period * 3)) + 4,) * 2) < 0.35
        i, j = np.floor(3 * u).astype(int) % cells.shape[0], np.floor(3 * v).astype(int) % cells.shape[1]
        mask = cells[i, j] & ((frac(3 * u) - 0.5) ** 2 + (frac(3 * v) - 0.5) ** 2 < 0.4 ** 2)
    else:
        raise ValueError(f"no renderer for pattern {kind!r}")
    return mask.astype(np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))


def pattern_captions(a: dict[str, str], rng: np.random.Generator, n: int = 5) -> list[str]:
    """`n` different true captions: the class phrase first, then random templates."""
    words = {"fg": a["color"], "bg": a["background"], "pattern": a["pattern"], "scale": a["scale"],
             "orient": f"{a['orientation']} " if a["orientation"] else "", "a_fg": article(a["color"]),
             "a_scale": article(a["scale"])}
    picks = rng.choice(len(_PATTERN_TEMPLATES), size=min(n - 1, len(_PATTERN_TEMPLATES)), replace=False)
    return [f"a pattern of {a['color']} {a['pattern']}"] + [_PATTERN_TEMPLATES[t].format(**words) for t in picks]


def pattern_attributes(n: int, seed: int) -> list[dict[str, str]]:
    """Per image of `render_patterns(n, seed)`: pattern, color, background, scale, orientation."""
    attr_rng, _ = np.random.default_rng(seed).spawn(2)
    return _draw_pattern_attributes(n, attr_rng)


def render_patterns(n: int, seed: int, size: int = 32) -> ImageSet:
    """`n` pattern images; label = pattern × colour (64 classes, `pattern_class_names()`), 5 captions each."""
    attr_rng, rng = np.random.default_rng(seed).spawn(2)
    attrs = _draw_pattern_attributes(n, attr_rng)
    colors = list(COLORS)
    masks = np.stack([_pattern_mask(a, size, rng) for a in attrs]) if n else np.zeros((0, size, size), np.float32)
    fg = np.array([COLORS[a["color"]] for a in attrs], np.float32).reshape(-1, 3) + rng.uniform(-12, 12, (n, 3))
    bg = np.array([_BACKGROUNDS[a["background"]] for a in attrs], np.float32).reshape(-1, 3) + rng.uniform(-10, 10, (n, 3))
    noise = rng.normal(0.0, 1.0, (n, size, size, 3)).astype(np.float32) * rng.uniform(0, 6, (n, 1, 1, 1)).astype(np.float32)
    captions = [pattern_captions(a, rng) for a in attrs]
    labels = np.array([PATTERNS.index(a["pattern"]) * len(colors) + colors.index(a["color"]) for a in attrs], np.int64)
    return ImageSet(colourise(masks, np.clip(fg, 0, 255), np.clip(bg, 0, 255), noise), labels,
                    pattern_class_names(), captions)

