"""The embedded offline world: image sets rendered from, or read out of, files that ship with pip packages.

- glyphs (fine-grained target): Unicode letters drawn from matplotlib's bundled DejaVu and STIX
  fonts. Hundreds of classes whose differences are small (accents, hooks, strokes, case), and whose
  identity must survive font style, colour, size, rotation and position; open-set by construction.
- shapes ("web" data): one coloured shape per scene with several captions that are true of the image.
- animals: the Animal-MNIST silhouettes (PyPI `animal-mnist`, MIT): real drawings of 10 animals.

Everything is a pure function of its arguments and seed. The only files read are the fonts and the
animal_mnist data inside installed packages; nothing is written.
"""
from __future__ import annotations

import gzip
import importlib.util
import pickle
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass
class ImageSet:
    """Images with labels and captions; the shared return type of every world."""

    images: np.ndarray          # uint8 [N, S, S, 3]
    labels: np.ndarray          # int64 [N], index into class_names
    class_names: list[str]      # human-readable, used in text prompts
    captions: list[list[str]]   # per image, natural-language captions true of that image (may be [])


def _package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it (animal_mnist's modules import TF)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the embedded world needs the installed package '{package}'")
    return Path(next(iter(spec.submodule_search_locations)))


def _article(phrase: str) -> str:
    """'a' or 'an' for a phrase that follows it (by spelling, good enough for our vocabulary)."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


# ============================================================================================ glyphs
# The fonts: DejaVu Sans / Serif / Sans Mono and STIX General (a Times-like serif), each in regular,
# bold, slanted and bold slanted: four type designs, sixteen styles. Excluded on purpose:
# *Display (47- and 20-glyph subsets), LastResortHE (maps every code point to a placeholder box),
# the cm*10 TeX fonts (their cmaps put TeX symbols at Latin code points, so "in the cmap" would lie)
# and STIXNonUni/STIXSiz* (symbols and size variants, no letters).
GLYPH_FONTS: dict[str, str] = {
    "DejaVuSans": "sans-serif", "DejaVuSans-Bold": "bold sans-serif",
    "DejaVuSans-Oblique": "italic sans-serif", "DejaVuSans-BoldOblique": "bold italic sans-serif",
    "DejaVuSerif": "serif", "DejaVuSerif-Bold": "bold serif",
    "DejaVuSerif-Italic": "italic serif", "DejaVuSerif-BoldItalic": "bold italic serif",
    "DejaVuSansMono": "monospace", "DejaVuSansMono-Bold": "bold monospace",
    "DejaVuSansMono-Oblique": "italic monospace", "DejaVuSansMono-BoldOblique": "bold italic monospace",
    "STIXGeneral": "serif", "STIXGeneralBol": "bold serif",
    "STIXGeneralItalic": "italic serif", "STIXGeneralBolIta": "bold italic serif",
}
_SIG_EM = 24         # px em of the canonical renders used to find empty glyphs and look-alikes
_SIG_CANVAS = 40
_LOOKALIKE_DIST = 0.03   # normalised squared distance under which two renders count as the same picture


@dataclass
class GlyphClass:
    """One letter class: the character, its Unicode name (lower case) and the fonts that have it."""

    char: str
    name: str                   # "latin small letter e with acute"
    fonts: list[str]            # font file paths whose cmap maps the character (and draw ink)


def font_dir() -> Path:
    """matplotlib's bundled TrueType folder (mpl-data/fonts/ttf)."""
    return _package_dir("matplotlib") / "mpl-data" / "fonts" / "ttf"


def font_style(font_path: str) -> str:
    """Caption words for a font file, e.g. 'bold italic serif'."""
    return GLYPH_FONTS.get(Path(font_path).stem, "plain")


def _font_paths() -> list[str]:
    paths = [font_dir() / f"{stem}.ttf" for stem in GLYPH_FONTS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"matplotlib's bundled fonts are missing {missing} (in {font_dir()})")
    return [str(p) for p in paths]


def _canonical_render(ch: str, font: ImageFont.FreeTypeFont) -> np.ndarray:
    """Ink mask on a fixed baseline, horizontally centred: what a glyph looks like at a fixed size."""
    img = Image.new("L", (_SIG_CANVAS, _SIG_CANVAS), 0)
    draw = ImageDraw.Draw(img)
    left, _, right, _ = draw.textbbox((0, 0), ch, font=font, anchor="ls")
    draw.text(((_SIG_CANVAS - (right - left)) / 2 - left, _SIG_CANVAS * 0.72), ch, font=font, fill=255, anchor="ls")
    return np.asarray(img, np.float32) / 255.0


@lru_cache(maxsize=None)
def _glyph_table(min_fonts: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(char, fonts) of the kept letters; cached because the look-alike search takes ~2 s."""
    from fontTools.ttLib import TTFont  # a matplotlib dependency; imported here to keep import light

    paths = _font_paths()
    cmaps = {p: set(TTFont(p, lazy=True).getBestCmap()) for p in paths}
    candidates: list[tuple[str, list[str]]] = []
    for cp in sorted(set().union(*cmaps.values())):
        ch = chr(cp)
        # Letters only, minus modifier letters (Lm: spacing diacritics and superscripts, mostly
        # marks rather than letters) and minus compatibility characters (NFKC changes them:
        # font variants such as 𝑎, superscripts, ligatures, KELVIN SIGN = K): those are another
        # letter drawn differently, so under style invariance they are not classes of their own.
        cat = unicodedata.category(ch)
        if not cat.startswith("L") or cat == "Lm" or unicodedata.normalize("NFKC", ch) != ch:
            continue
        fonts = [p for p in paths if cp in cmaps[p]]
        if len(fonts) >= min_fonts:
            candidates.append((ch, fonts))

    # Canonical renders per font: drop fonts whose glyph is empty, then look for look-alikes.
    sigs: dict[str, dict[str, np.ndarray]] = {p: {} for p in paths}
    for p in paths:
        font = ImageFont.truetype(p, _SIG_EM)
        for ch, fonts in candidates:
            if p in fonts:
                mask = _canonical_render(ch, font)
                if mask.sum() >= 1.0:
                    # 2×2 mean-pooling: 400 numbers still show an accent, and keep the search cheap
                    sigs[p][ch] = mask.reshape(_SIG_CANVAS // 2, 2, _SIG_CANVAS // 2, 2).mean((1, 3)).ravel()
    candidates = [(ch, [p for p in fonts if ch in sigs[p]]) for ch, fonts in candidates]
    candidates = [(ch, fonts) for ch, fonts in candidates if len(fonts) >= min_fonts]

    # Cross-script homoglyphs (Latin a / Cyrillic а / Greek α-like pairs such as A / Α) draw the very
    # same picture in most fonts: two labels for one image would make retrieval ground truth wrong.
    # Two letters are look-alikes when their renders (same font, same size, same baseline) are nearly
    # identical in at least half of the fonts they share; keep the one with the lower code point.
    index = {ch: i for i, (ch, _) in enumerate(candidates)}
    n = len(candidates)
    same = np.zeros((n, n), np.int16)
    shared = np.zeros((n, n), np.int16)
    for p in paths:
        chars = [c for c in sigs[p] if c in index]
        if not chars:
            continue
        idx = np.array([index[c] for c in chars])
        x = np.stack([sigs[p][c] for c in chars]).astype(np.float32)
        sq = (x * x).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
        close = d2 / np.minimum(sq[:, None], sq[None, :]) < _LOOKALIKE_DIST
        same[np.ix_(idx, idx)] += close
        shared[np.ix_(idx, idx)] += 1
    lookalike = 2 * same >= shared
    kept: list[int] = []
    for i in range(n):
        if not kept or not lookalike[i, kept].any():
            kept.append(i)
    return tuple((candidates[i][0], tuple(candidates[i][1])) for i in kept)


def glyph_classes(min_fonts: int = 6) -> list[GlyphClass]:
    """Letters that ≥ `min_fonts` of the bundled font styles really contain (cmap, not PIL's fallback
    box) and draw with ink, without look-alike duplicates, sorted by code point."""
    return [GlyphClass(ch, unicodedata.name(ch).lower(), list(fonts)) for ch, fonts in _glyph_table(min_fonts)]


def _base_glyph(ch: str, font_path: str, em: int) -> tuple[Image.Image, float, float, tuple[float, ...]]:
    """The glyph's ink drawn once at `em` px: (mask, x of ink centre, y of baseline, ink box)."""
    font = _font(font_path, em)
    left, top, right, bottom = font.getbbox(ch, anchor="ls")
    pad = 2
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), ch, font=font, fill=255, anchor="ls")
    ink = (pad, pad, pad + right - left, pad + bottom - top)
    return img, pad + (right - left) / 2, float(pad - top), ink


@lru_cache(maxsize=None)
def _font(path: str, em: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, em)


_SUPERSAMPLE = 4     # draw at 4× and box-filter down: anti-aliased edges at 32 px
_BASE_EM = 112       # px em of the glyph masks drawn once per (class, font), then scaled / rotated per image


def _glyph_mask(glyph: tuple[Image.Image, float, float, tuple[float, ...]], size: int,
                rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased ink coverage [size, size] in [0, 1] of one randomly placed `_base_glyph`.

    Font size is 55–80 % of the image, the glyph sits on a fixed baseline (so case and
    superscript-like positions remain a cue) shifted by ≤ 10 % and rotated by ≤ 12°.
    """
    base, cx, baseline, ink = glyph
    big = size * _SUPERSAMPLE
    scale = rng.uniform(0.55, 0.80) * big / _BASE_EM          # output px per base px
    theta = np.deg2rad(rng.uniform(-12.0, 12.0))
    # Anchor: horizontal ink centre, and the middle between cap height (0.73 em) and descender
    # (0.24 em below the baseline), so letters of every case land near the middle of the image.
    anchor = np.array([cx, baseline - 0.245 * _BASE_EM])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    corners = np.array([[ink[0], ink[1]], [ink[2], ink[1]], [ink[0], ink[3]], [ink[2], ink[3]]]) - anchor
    placed = corners @ (scale * rot).T                        # ink corners relative to the image centre
    lo, hi = placed.min(0), placed.max(0)
    margin = 0.5 * _SUPERSAMPLE
    span = hi - lo
    if (span > big - 2 * margin).any():                       # very tall letters: shrink to fit
        shrink = float((big - 2 * margin) / span.max())
        scale, placed, lo, hi = scale * shrink, placed * shrink, lo * shrink, hi * shrink
    centre = big / 2 + rng.uniform(-0.10, 0.10, 2) * big
    # Keep all the ink inside the image: clamp the random shift, never crop the letter.
    centre = np.clip(centre, margin - lo, big - margin - hi)
    # PIL's affine transform maps output pixels to input pixels: the inverse of placement.
    inv = rot.T / scale
    offset = anchor - inv @ centre
    img = base.transform((big, big), Image.AFFINE, (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1]),
                         resample=Image.BILINEAR, fillcolor=0)
    return np.asarray(img.reduce(_SUPERSAMPLE), np.float32) / 255.0


def _colourise(masks: np.ndarray, fg: np.ndarray, bg: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Blend per-image stroke / background colours through coverage masks, add noise, to uint8."""
    m = masks[..., None]
    out = bg[:, None, None, :] * (1.0 - m) + fg[:, None, None, :] * m + noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_glyphs(classes: Sequence[GlyphClass], per_class: int, seed: int, size: int = 32) -> ImageSet:
    """`per_class` images of each class (label = position in `classes`): random style, size, shift,
    rotation, a random dark stroke colour on a random light background, light noise."""
    rng = np.random.default_rng(seed)
    n = len(classes) * per_class
    masks = np.zeros((n, size, size), np.float32)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
    captions: list[list[str]] = []
    for c, cls in enumerate(classes):
        if not cls.fonts:
            raise ValueError(f"glyph class {cls.name!r} has no fonts")
        offset = int(rng.integers(len(cls.fonts)))            # cycle through the styles from a random one
        drawn: dict[str, tuple] = {}                           # this class's glyph per font, drawn once
        for i in range(per_class):
            font = cls.fonts[(offset + i) % len(cls.fonts)]
            if font not in drawn:
                drawn[font] = _base_glyph(cls.char, font, _BASE_EM)
            masks[c * per_class + i] = _glyph_mask(drawn[font], size, rng)
            style = font_style(font)
            captions.append([f"the letter {cls.name}", f"{_article(style)} {style} {cls.name}"])
    # Colours vary independently of identity: dark (0-95) strokes, light (165-255) backgrounds,
    # so every channel differs by ≥ 70 levels and the letter stays legible.
    fg = rng.integers(0, 96, (n, 3)).astype(np.float32)
    bg = rng.integers(165, 256, (n, 3)).astype(np.float32)
    noise = rng.normal(0.0, 1.0, (n, size, size, 3)).astype(np.float32) * rng.uniform(0, 6, (n, 1, 1, 1)).astype(np.float32)
    return ImageSet(_colourise(masks, fg, bg, noise), labels, [c.name for c in classes], captions)


def split_classes(n_classes: int, seed: int, test_fraction: float = 0.5,
                  val_fraction_of_train: float = 0.2) -> dict[str, np.ndarray]:
    """Class-disjoint 'train' / 'val' / 'test' class indices (sorted) covering range(n_classes).

    Metric-learning protocol: test = held-out classes (`test_fraction` of all); val = a
    class-disjoint `val_fraction_of_train` of the remaining (training) classes.
    """
    if not (0.0 <= test_fraction <= 1.0 and 0.0 <= val_fraction_of_train <= 1.0):
        raise ValueError(f"fractions must be in [0, 1], got test={test_fraction}, val={val_fraction_of_train}")
    perm = np.random.default_rng(seed).permutation(n_classes).astype(np.int64)
    n_test = int(round(n_classes * test_fraction))
    n_val = int(round((n_classes - n_test) * val_fraction_of_train))
    return {"train": np.sort(perm[n_test + n_val:]), "val": np.sort(perm[n_test:n_test + n_val]),
            "test": np.sort(perm[:n_test])}


# ============================================================================================ shapes
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
# Saturated colours with everyday names, far apart in RGB so that 32-px anti-aliasing and the
# ±12 jitter cannot move one into another's neighbourhood.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 25, 30), "orange": (255, 140, 0), "yellow": (250, 225, 35), "green": (35, 170, 55),
    "blue": (30, 70, 235), "purple": (135, 45, 195), "pink": (255, 120, 205), "white": (248, 248, 248),
}
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
    big = size * _SUPERSAMPLE
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
    return np.asarray(img.reduce(_SUPERSAMPLE), np.float32) / 255.0


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
    first = f"{_article(color)} {color} {shape}"
    picks = rng.choice(len(_TEMPLATES), size=min(n - 1, len(_TEMPLATES)), replace=False)
    out = [first]
    for t in picks:
        where = _WHERE[position][int(rng.integers(len(_WHERE[position])))]
        out.append(_TEMPLATES[t].format(size=size_name, color=color, shape=shape, where=where, pos=position,
                                        a_size=_article(size_name), a_color=_article(color),
                                        a_shape=_article(shape)))
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
    return ImageSet(_colourise(masks, fg, bg, texture), labels, shape_class_names(), captions)


# ============================================================================================ animals
# Label order: the package's description lists "Bear, Bird, Cat, Cow, Dog, Elephant, Giraffe, Horse,
# Sheep, Zebra"; labels 0-9 are in that (alphabetical) order, confirmed by looking at the images
# (0 bears, 1 birds, 5 trunks, 6 long necks, 9 stripes).
ANIMALS: tuple[str, ...] = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The data are pickled ndarrays: allow exactly what rebuilding one needs, nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}:
            try:
                from numpy._core.multiarray import _reconstruct  # numpy 2 (numpy.core is a warning shim)
            except ImportError:  # pragma: no cover - numpy 1
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from animal_mnist data")


def _read_animal_array(name: str) -> np.ndarray:
    with gzip.open(_package_dir("animal_mnist") / "data" / "Animal_MNIST" / name, "rb") as f:
        return np.asarray(_NumpyOnlyUnpickler(f).load())


def load_animal_mnist(size: int = 32) -> ImageSet:
    """The 10,000 Animal-MNIST silhouettes (10 classes × 1,000; white animal on black), grey
    28 px → `size` px (bilinear) → RGB, in the package's order."""
    data = _read_animal_array("animal_data_version_3.gz").astype(np.uint8)
    labels = _read_animal_array("animal_label_version_3.gz").astype(np.int64)
    if data.shape[1:] != (28, 28) or len(data) != len(labels):
        raise ValueError(f"unexpected Animal-MNIST arrays: data {data.shape}, labels {labels.shape}")
    if size == 28:
        grey = data
    else:
        grey = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR)) for x in data])
    images = np.repeat(grey[..., None], 3, axis=-1)
    captions = [[f"a silhouette of {_article(ANIMALS[y])} {ANIMALS[y]}",
                 f"a black and white picture of {_article(ANIMALS[y])} {ANIMALS[y]}"] for y in labels]
    return ImageSet(images, labels, list(ANIMALS), captions)


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Per-class random split of indices (sorted) by `fractions`, e.g. {"train": 0.8, "test": 0.2}.

    Fractions may sum to < 1 (the rest is left out). Rounding is on cumulative fractions, so the
    parts of one class always add up to round(sum × class size).
    """
    values = np.array(list(fractions.values()), np.float64)
    if (values < 0).any() or values.sum() > 1.0 + 1e-9:
        raise ValueError(f"fractions must be >= 0 and sum to <= 1, got {fractions}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in fractions}
    bounds = np.concatenate([[0.0], np.cumsum(values)])
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.rint(bounds * len(idx)).astype(int)
        for k, name in enumerate(fractions):
            parts[name].append(idx[cuts[k]:cuts[k + 1]])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64)
            for k, v in parts.items()}


# ============================================================================================ prompts
def class_prompts(class_names: Sequence[str], template: str = "a photo of a {}") -> list[str]:
    """Zero-shot prompts: `template` filled with each class name; "a {}" becomes "an {}" before a vowel."""
    with_an = re.sub(r"\ba \{\}", "an {}", template)
    return [(with_an if _article(name) == "an" else template).format(name) for name in class_names]
