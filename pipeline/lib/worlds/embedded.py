"""The embedded offline world: image sets rendered from, or read out of, files that ship with pip packages.

- flags (the default fine-grained target): layouts filled with ordered colours, photographed at
  random size, proportions, angle, lighting; classes differ in one colour, their order or the layout.
- glyphs (a harder target): Unicode letters drawn from matplotlib's bundled DejaVu and STIX fonts.
- the "web" the teacher pretrains on, as subsets: shapes (one coloured shape per scene, captions
  true of the image), Animal-MNIST silhouettes (PyPI `animal-mnist`, MIT), Unicode symbols from the
  same fonts, and textile-like patterns with captions.

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
from typing import Callable, Sequence

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
_PARTITION_SEED = 20250826  # the one shuffle every glyph dataset cuts its classes from


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


# Glyph kinds: which Unicode categories (and blocks) make a class.
#   letters: letters (L*), minus modifier letters (Lm: spacing diacritics and superscripts, mostly marks
#            rather than letters);
#   symbols: other / math / currency symbols (So, Sm, Sc), minus Braille patterns, box drawing and block
#            elements (dot and line fragments whose names say little; Braille alone has 256).
# Both drop compatibility characters (NFKC changes them: font variants such as 𝑎, superscripts,
# ligatures, KELVIN SIGN = K): another character drawn differently is not a class of its own.
GLYPH_KINDS: dict[str, tuple[str, ...]] = {"letters": ("Lu", "Ll", "Lt", "Lo"), "symbols": ("So", "Sm", "Sc")}
_EXCLUDED_BLOCKS = ((0x2500, 0x259F), (0x2800, 0x28FF))  # box drawing + block elements, Braille


def _is_class_char(ch: str, kind: str) -> bool:
    cp = ord(ch)
    return (unicodedata.category(ch) in GLYPH_KINDS[kind] and unicodedata.normalize("NFKC", ch) == ch
            and not any(lo <= cp <= hi for lo, hi in _EXCLUDED_BLOCKS))


@lru_cache(maxsize=None)
def _glyph_table(min_fonts: int, kind: str = "letters") -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(char, fonts) of the kept characters; cached because the look-alike search takes ~2 s."""
    from fontTools.ttLib import TTFont  # a matplotlib dependency; imported here to keep import light

    if kind not in GLYPH_KINDS:
        raise ValueError(f"unknown glyph kind {kind!r} (known: {sorted(GLYPH_KINDS)})")
    paths = _font_paths()
    cmaps = {p: set(TTFont(p, lazy=True).getBestCmap()) for p in paths}
    candidates: list[tuple[str, list[str]]] = []
    for cp in sorted(set().union(*cmaps.values())):
        ch = chr(cp)
        if not _is_class_char(ch, kind):
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


def glyph_classes(min_fonts: int = 6, kind: str = "letters") -> list[GlyphClass]:
    """Characters of `kind` (letters | symbols) that ≥ `min_fonts` of the bundled font styles really
    contain (cmap, not PIL's fallback box) and draw with ink, without look-alike duplicates, sorted by
    code point."""
    return [GlyphClass(ch, unicodedata.name(ch).lower(), list(fonts)) for ch, fonts in _glyph_table(min_fonts, kind)]


def glyph_partition(kind: str, start: int, count: int, min_fonts: int = 6) -> list[GlyphClass]:
    """Classes [start, start + count) of one fixed shuffle of all `kind` classes, sorted by code point.

    Datasets cut from the same shuffle at non-overlapping ranges have disjoint classes by construction.
    """
    pool = glyph_classes(min_fonts, kind)
    if start < 0 or count < 1 or start + count > len(pool):
        raise ValueError(f"glyph classes [{start}, {start + count}) requested, but only {len(pool)} {kind} "
                         "classes exist in the bundled fonts")
    order = np.random.default_rng(_PARTITION_SEED).permutation(len(pool))
    return [pool[i] for i in sorted(order[start:start + count])]


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


@dataclass(frozen=True)
class GlyphVariation:
    """How much one class's images vary besides colour: type styles (font file stems; None = every
    style that has the character), the em size range as a share of the image, the largest rotation."""
    styles: tuple[str, ...] | None = None
    size: tuple[float, float] = (0.55, 0.80)
    max_rotation: float = 12.0


def _glyph_mask(glyph: tuple[Image.Image, float, float, tuple[float, ...]], size: int,
                rng: np.random.Generator, variation: GlyphVariation = GlyphVariation()) -> np.ndarray:
    """Anti-aliased ink coverage [size, size] in [0, 1] of one randomly placed `_base_glyph`.

    The font size is a random share of the image (`variation.size`), the glyph sits on a fixed
    baseline (so case and superscript-like positions remain a cue), shifted by ≤ 10 % and rotated
    by ≤ `variation.max_rotation` degrees.
    """
    base, cx, baseline, ink = glyph
    big = size * _SUPERSAMPLE
    scale = rng.uniform(*variation.size) * big / _BASE_EM          # output px per base px
    theta = np.deg2rad(rng.uniform(-variation.max_rotation, variation.max_rotation))
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


def render_glyphs(classes: Sequence[GlyphClass], per_class: int, seed: int, size: int = 32,
                  noun: str = "letter", variation: GlyphVariation = GlyphVariation()) -> ImageSet:
    """`per_class` images of each class (label = position in `classes`): random type style, size,
    shift and rotation within `variation`, a random dark stroke colour on a random light background,
    light noise. Captions name the character as a `noun` ('letter', 'symbol') and its type style."""
    rng = np.random.default_rng(seed)
    n = len(classes) * per_class
    masks = np.zeros((n, size, size), np.float32)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
    captions: list[list[str]] = []
    for c, cls in enumerate(classes):
        fonts = [f for f in cls.fonts if variation.styles is None or Path(f).stem in variation.styles]
        if not fonts:
            raise ValueError(f"glyph class {cls.name!r} has none of the styles {variation.styles}")
        offset = int(rng.integers(len(fonts)))                 # cycle through the styles from a random one
        drawn: dict[str, tuple] = {}                           # this class's glyph per font, drawn once
        for i in range(per_class):
            font = fonts[(offset + i) % len(fonts)]
            if font not in drawn:
                drawn[font] = _base_glyph(cls.char, font, _BASE_EM)
            masks[c * per_class + i] = _glyph_mask(drawn[font], size, rng, variation)
            style = font_style(font)
            captions.append([f"the {noun} {cls.name}", f"{_article(style)} {style} {cls.name}"])
    # Colours vary independently of identity: dark (0-95) strokes, light (165-255) backgrounds,
    # so every channel differs by ≥ 70 levels and the character stays legible.
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


# ============================================================================================ patterns
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
    big = size * _SUPERSAMPLE
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
    return mask.astype(np.float32).reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean((1, 3))


def pattern_captions(a: dict[str, str], rng: np.random.Generator, n: int = 5) -> list[str]:
    """`n` different true captions: the class phrase first, then random templates."""
    words = {"fg": a["color"], "bg": a["background"], "pattern": a["pattern"], "scale": a["scale"],
             "orient": f"{a['orientation']} " if a["orientation"] else "", "a_fg": _article(a["color"]),
             "a_scale": _article(a["scale"])}
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
    return ImageSet(_colourise(masks, np.clip(fg, 0, 255), np.clip(bg, 0, 255), noise), labels,
                    pattern_class_names(), captions)


# ============================================================================================ flags
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
    big = size * _SUPERSAMPLE
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
    return onehot.astype(np.float32).reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 4).mean((1, 3))


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


# ============================================================================================ web
# The embedded "web": everything the teacher saw while pretraining, as named subsets of one dataset.
# Each subset is built from its options and a seed and says which split each image belongs to.
# Procedural subsets (shapes, patterns) take image COUNTS per split; subsets of fixed classes
# (animals, symbols) take the SHARE of each class's images per split. Shares may sum to
# less than 1 (the rest is left out).
SPLITS = ("train", "val", "test")


@dataclass
class Subset:
    images: ImageSet
    splits: list[str]           # per image: train | val | test


def _split_options(options: dict, subset: str) -> dict[str, float]:
    return {s: options[s] for s in SPLITS if options.get(s)}


def _counted(render, options: dict, seed: int, subset: str) -> Subset:
    counts = {s: int(n) for s, n in _split_options(options, subset).items()}
    images = render(sum(counts.values()), seed)
    return Subset(images, [s for s, n in counts.items() for _ in range(n)])


def _stratified(images: ImageSet, options: dict, seed: int, subset: str) -> Subset:
    parts = stratified_split(images.labels, _split_options(options, subset), seed)
    split_of = np.full(len(images.labels), "", dtype=object)
    for split, idx in parts.items():
        split_of[idx] = split
    keep = split_of != ""
    kept = ImageSet(images.images[keep], images.labels[keep], images.class_names,
                    [c for c, k in zip(images.captions, keep) if k])
    return Subset(kept, list(split_of[keep]))


def glyph_variation(options: dict) -> GlyphVariation:
    """GlyphVariation from config options (`styles`, `size`, `max_rotation`; defaults for the rest)."""
    default = GlyphVariation()
    styles = options.get("styles")
    return GlyphVariation(styles=tuple(styles) if styles else None, size=tuple(options.get("size", default.size)),
                          max_rotation=float(options.get("max_rotation", default.max_rotation)))


def _glyph_subset(kind: str, noun: str):
    def build(options: dict, seed: int, subset: str) -> Subset:
        classes = glyph_partition(kind, int(options.get("class_offset", 0)), int(options["n_classes"]))
        images = render_glyphs(classes, int(options["per_class"]), seed, noun=noun, variation=glyph_variation(options))
        return _stratified(images, options, seed, subset)
    return build


_GLYPH_OPTIONS = frozenset({"n_classes", "per_class", "class_offset", "styles", "size", "max_rotation"})
WEB_SUBSETS: dict[str, tuple[frozenset[str], Callable[[dict, int, str], Subset]]] = {
    # name → (option keys, builder)
    "shapes": (frozenset(SPLITS), lambda o, seed, s: _counted(render_shapes, o, seed, s)),
    "animals": (frozenset(SPLITS), lambda o, seed, s: _stratified(load_animal_mnist(), o, seed, s)),
    "patterns": (frozenset(SPLITS), lambda o, seed, s: _counted(render_patterns, o, seed, s)),
    "symbols": (frozenset(SPLITS) | _GLYPH_OPTIONS, _glyph_subset("symbols", "symbol")),
}


def check_web_subset(name: str, options: dict) -> str | None:
    """None if `options` are valid for subset `name`, else what is wrong (no rendering)."""
    if name not in WEB_SUBSETS:
        return f"unknown subset '{name}' (known: {sorted(WEB_SUBSETS)})"
    keys, _ = WEB_SUBSETS[name]
    unknown = sorted(set(options) - keys)
    if unknown:
        return f"unknown option(s) {unknown} (valid: {sorted(keys)})"
    if any(not isinstance(options.get(s, 0), (int, float)) or options.get(s, 0) < 0 for s in SPLITS):
        return "split sizes must be numbers >= 0"
    counted = name in ("shapes", "patterns")
    if not counted and sum(options.get(s, 0) for s in SPLITS) > 1.0 + 1e-9:
        return "split shares of each class's images must sum to at most 1"
    if counted and any(float(options.get(s, 0)) != int(options.get(s, 0)) for s in SPLITS):
        return "split sizes are image counts (integers)"
    if {"n_classes", "per_class"} & keys:
        for key in ("n_classes", "per_class"):
            if not isinstance(options.get(key), int) or options[key] < 1:
                return f"{key} must be an integer >= 1"
        if options.get("class_offset", 0) < 0:
            return "class_offset must be >= 0"
    return None


def build_web_subset(name: str, options: dict, seed: int) -> Subset:
    """One subset of the embedded web, its images' splits included (a pure function of its arguments)."""
    problem = check_web_subset(name, options)
    if problem:
        raise ValueError(f"web subset '{name}': {problem}")
    return WEB_SUBSETS[name][1](options, seed, name)


