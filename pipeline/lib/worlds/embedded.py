"""The embedded offline world: image sets rendered or read from files that ship with pip packages.

- glyphs: Unicode letters from matplotlib's bundled DejaVu fonts (Bitstream Vera licence) — a
  fine-grained, open-set domain with hundreds of classes whose differences are small (accents,
  hooks, strokes) and whose identity must survive font style, colour, size and position;
- shapes: procedural scenes (shape × colour × size × position) with several true captions each —
  generic "web" data with real image-text content;
- animals: the Animal-MNIST silhouettes (PyPI `animal-mnist`, MIT), real drawings of 10 animals.
The only reads are package data files; nothing is written.
"""
from __future__ import annotations

import gzip
import pickle
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass
class ImageSet:
    images: np.ndarray          # uint8 [N, S, S, 3]
    labels: np.ndarray          # int64 [N], index into class_names
    class_names: list[str]      # human-readable, used in prompts
    captions: list[list[str]]   # per image, natural-language captions (true of that image)


# ------------------------------------------------------------------------------------- glyphs
GLYPH_FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
               "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
               "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique")


@dataclass(frozen=True)
class GlyphClass:
    char: str
    name: str                   # "latin small letter e with acute"
    fonts: tuple[str, ...]      # font files whose cmap really has the glyph


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@lru_cache(maxsize=None)
def glyph_classes(min_fonts: int = 6) -> tuple[GlyphClass, ...]:
    """Unicode letters present (per the fonts' cmaps, not PIL's fallback box) in >= min_fonts styles."""
    from fontTools.ttLib import TTFont

    cmaps = {}
    for name in GLYPH_FONTS:
        path = font_dir() / f"{name}.ttf"
        if path.is_file():
            cmaps[str(path)] = set(TTFont(str(path), lazy=True).getBestCmap())
    codepoints = sorted(set().union(*cmaps.values()))
    out = []
    for cp in codepoints:
        ch = chr(cp)
        if not unicodedata.category(ch).startswith("L"):
            continue
        fonts = tuple(f for f, cmap in cmaps.items() if cp in cmap)
        if len(fonts) >= min_fonts:
            out.append(GlyphClass(ch, unicodedata.name(ch, f"U+{cp:04X}").lower(), fonts))
    return tuple(out)


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _random_colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A light background and a dark stroke (high contrast, random hue)."""
    bg = tuple(int(v) for v in rng.integers(170, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 90, 3))
    return fg, bg


def render_glyph(ch: str, font_path: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One glyph: random font size, shift, small rotation, random dark-on-light colours."""
    canvas = size * 2
    fg, bg = _random_colours(rng)
    img = Image.new("RGB", (canvas, canvas), bg)
    font = _font(font_path, int(canvas * rng.uniform(0.55, 0.78)))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), ch, font=font)
    x = (canvas - (right - left)) / 2 - left + rng.uniform(-0.08, 0.08) * canvas
    y = (canvas - (bottom - top)) / 2 - top + rng.uniform(-0.08, 0.08) * canvas
    draw.text((x, y), ch, font=font, fill=fg)
    img = img.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR, fillcolor=bg)
    return np.asarray(img.resize((size, size), Image.LANCZOS))


def render_glyphs(classes: list[GlyphClass] | tuple[GlyphClass, ...], per_class: int, seed: int,
                  size: int = 32) -> ImageSet:
    """`per_class` images of each class, cycling through the fonts that have the glyph."""
    rng = np.random.default_rng(seed)
    images, labels, captions = [], [], []
    for label, cls in enumerate(classes):
        offset = int(rng.integers(len(cls.fonts)))
        for i in range(per_class):
            font = cls.fonts[(offset + i) % len(cls.fonts)]
            images.append(render_glyph(cls.char, font, rng, size))
            labels.append(label)
            style = Path(font).stem.replace("DejaVu", "").replace("-", " ").lower()
            captions.append([f"the letter {cls.name}", f"{cls.name} in {style} type"])
    return ImageSet(np.stack(images), np.array(labels, np.int64), [c.name for c in classes], captions)


def split_classes(n_classes: int, seed: int, test_fraction: float = 0.5,
                  val_fraction_of_train: float = 0.2) -> dict[str, np.ndarray]:
    """Class-disjoint train / val / test class indices (metric-learning protocol, METHOD §5):
    test = held-out classes; val = a class-disjoint share of the training classes."""
    perm = np.random.default_rng(seed).permutation(n_classes)
    n_test = int(round(n_classes * test_fraction))
    n_val = max(1, int(round((n_classes - n_test) * val_fraction_of_train)))
    return {"train": np.sort(perm[n_test + n_val:]), "val": np.sort(perm[n_test:n_test + n_val]),
            "test": np.sort(perm[:n_test])}


# ------------------------------------------------------------------------------------- shapes
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
COLORS = {"red": (220, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
          "orange": (250, 140, 0), "purple": (130, 40, 170), "pink": (250, 130, 200), "white": (250, 250, 250)}
SIZES = ("small", "large")
POSITIONS = {"top left": (0.3, 0.3), "top right": (0.7, 0.3), "bottom left": (0.3, 0.7),
             "bottom right": (0.7, 0.7), "center": (0.5, 0.5)}


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        k = r * 0.85
        return [(cx - k, cy - k), (cx + k, cy - k), (cx + k, cy + k), (cx - k, cy + k)]
    if shape == "triangle":
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.deg2rad([-90, 30, 150])]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "hexagon":
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.deg2rad(np.arange(0, 360, 60))]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = np.deg2rad(-90 + 36 * i)
            pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.35
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(shape)


def _background(rng: np.random.Generator, canvas: int, avoid: tuple[int, int, int]) -> Image.Image:
    """A muted random colour with light noise, kept far from the object's colour."""
    while True:
        base = rng.integers(40, 140, 3)
        if np.abs(base - np.array(avoid)).sum() > 150:
            break
    noise = rng.normal(0, 8, (canvas, canvas, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def render_shape(shape: str, colour: str, size_name: str, position: str, rng: np.random.Generator,
                 size: int = 32) -> np.ndarray:
    canvas = size * 4
    rgb = COLORS[colour]
    img = _background(rng, canvas, rgb)
    draw = ImageDraw.Draw(img)
    r = canvas * (0.12 if size_name == "small" else 0.24) * rng.uniform(0.9, 1.1)
    px, py = POSITIONS[position]
    cx, cy = (px + rng.uniform(-0.04, 0.04)) * canvas, (py + rng.uniform(-0.04, 0.04)) * canvas
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=rgb, width=max(2, int(r * 0.35)))
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=rgb)
    return np.asarray(img.resize((size, size), Image.LANCZOS))


def shape_captions(shape: str, colour: str, size_name: str, position: str) -> list[str]:
    where = "in the center" if position == "center" else f"in the {position}"
    return [f"a {colour} {shape}", f"a {size_name} {colour} {shape} {where}",
            f"a picture of a {size_name} {colour} {shape}", f"a {colour} {shape} {where} of the image",
            f"{size_name} {colour} {shape}, {position}"]


def render_shapes(n: int, seed: int, size: int = 32) -> ImageSet:
    """`n` scenes with one object each; label = shape × colour (64 classes), 5 true captions each."""
    rng = np.random.default_rng(seed)
    colours = list(COLORS)
    class_names = [f"{c} {s}" for s in SHAPES for c in colours]
    images, labels, captions = [], [], []
    for _ in range(n):
        s, c = int(rng.integers(len(SHAPES))), int(rng.integers(len(colours)))
        size_name = SIZES[int(rng.integers(len(SIZES)))]
        position = list(POSITIONS)[int(rng.integers(len(POSITIONS)))]
        images.append(render_shape(SHAPES[s], colours[c], size_name, position, rng, size))
        labels.append(s * len(colours) + c)
        captions.append(shape_captions(SHAPES[s], colours[c], size_name, position))
    empty = np.zeros((0, size, size, 3), np.uint8)
    return ImageSet(np.stack(images) if images else empty, np.array(labels, np.int64), class_names, captions)


# ------------------------------------------------------------------------------------- animals
ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")


def _animal_file(name: str) -> Path:
    import animal_mnist

    return Path(animal_mnist.__file__).parent / "data" / "Animal_MNIST" / name


def load_animal_mnist(size: int = 32) -> ImageSet:
    """The 10,000 Animal-MNIST silhouettes (10 × 1,000), grey 28 px → RGB `size` px.

    Class names: the package README lists "Bear, Bird, Cat, Cow, Dog, Elephant, Giraffe, Horse,
    Sheep, Zebra"; labels 0-9 follow that (alphabetical) order.
    """
    with gzip.open(_animal_file("animal_data_version_3.gz"), "rb") as f:
        data = np.asarray(pickle.load(f), np.uint8)
    with gzip.open(_animal_file("animal_label_version_3.gz"), "rb") as f:
        labels = np.asarray(pickle.load(f), np.int64)
    images = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR)) for x in data])
    images = np.repeat(images[..., None], 3, axis=-1)
    captions = [[f"a silhouette of a {ANIMALS[y]}", f"a black and white picture of a {ANIMALS[y]}"] for y in labels]
    return ImageSet(images, labels, list(ANIMALS), captions)


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Per-class random split of indices by `fractions` (which may sum to < 1: the rest is unused)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {k: [] for k in fractions}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for name, frac in fractions.items():
            n = int(round(frac * len(idx)))
            out[name].extend(idx[start:start + n].tolist())
            start += n
    return {k: np.sort(np.array(v, np.int64)) for k, v in out.items()}


def class_prompts(class_names: list[str], template: str = "a photo of a {}") -> list[str]:
    return [template.format(c) for c in class_names]
