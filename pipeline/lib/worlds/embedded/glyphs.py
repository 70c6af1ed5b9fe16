"""Glyphs: Unicode letters and symbols drawn from matplotlib's bundled DejaVu and STIX fonts.

Letters are the alternative (harder) target; symbols are a subset of the web the teacher learns.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.lib.worlds.embedded.common import SUPERSAMPLE, ImageSet, article, colourise, package_dir

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
    return package_dir("matplotlib") / "mpl-data" / "fonts" / "ttf"


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
    big = size * SUPERSAMPLE
    scale = rng.uniform(*variation.size) * big / _BASE_EM          # output px per base px
    theta = np.deg2rad(rng.uniform(-variation.max_rotation, variation.max_rotation))
    # Anchor: horizontal ink centre, and the middle between cap height (0.73 em) and descender
    # (0.24 em below the baseline), so letters of every case land near the middle of the image.
    anchor = np.array([cx, baseline - 0.245 * _BASE_EM])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    corners = np.array([[ink[0], ink[1]], [ink[2], ink[1]], [ink[0], ink[3]], [ink[2], ink[3]]]) - anchor
    placed = corners @ (scale * rot).T                        # ink corners relative to the image centre
    lo, hi = placed.min(0), placed.max(0)
    margin = 0.5 * SUPERSAMPLE
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
    return np.asarray(img.reduce(SUPERSAMPLE), np.float32) / 255.0


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
            captions.append([f"the {noun} {cls.name}", f"{article(style)} {style} {cls.name}"])
    # Colours vary independently of identity: dark (0-95) strokes, light (165-255) backgrounds,
    # so every channel differs by ≥ 70 levels and the character stays legible.
    fg = rng.integers(0, 96, (n, 3)).astype(np.float32)
    bg = rng.integers(165, 256, (n, 3)).astype(np.float32)
    noise = rng.normal(0.0, 1.0, (n, size, size, 3)).astype(np.float32) * rng.uniform(0, 6, (n, 1, 1, 1)).astype(np.float32)
    return ImageSet(colourise(masks, fg, bg, noise), labels, [c.name for c in classes], captions)


def glyph_variation(options: dict) -> GlyphVariation:
    """GlyphVariation from config options (`styles`, `size`, `max_rotation`; defaults for the rest)."""
    default = GlyphVariation()
    styles = options.get("styles")
    return GlyphVariation(styles=tuple(styles) if styles else None, size=tuple(options.get("size", default.size)),
                          max_rotation=float(options.get("max_rotation", default.max_rotation)))

