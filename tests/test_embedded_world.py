"""The embedded world: deterministic, well-formed, and its labels and captions are true of its images."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from pipeline.lib import prompts, splits
from pipeline.lib.worlds.embedded import animals, builders, common, flags, glyphs, patterns, shapes, web


@pytest.fixture(scope="module")
def classes() -> list[glyphs.GlyphClass]:
    return glyphs.glyph_classes()


@pytest.fixture(scope="module")
def shape_set() -> common.ImageSet:
    return shapes.render_shapes(600, seed=5)


@pytest.fixture(scope="module")
def animal_set() -> common.ImageSet:
    return animals.load_animal_mnist()


def check_image_set(s: common.ImageSet, n: int, size: int) -> None:
    assert s.images.dtype == np.uint8 and s.images.shape == (n, size, size, 3)
    assert s.labels.dtype == np.int64 and s.labels.shape == (n,)
    assert s.labels.min() >= 0 and s.labels.max() < len(s.class_names)
    assert len(s.captions) == n and all(isinstance(c, str) and c for caps in s.captions for c in caps)


# ------------------------------------------------------------------------------------- glyphs
def test_enough_glyph_classes_sorted_letters_with_names(classes) -> None:
    assert len(classes) >= 300
    cps = [ord(c.char) for c in classes]
    assert cps == sorted(cps) and len(set(cps)) == len(cps)
    for c in classes:
        assert unicodedata.category(c.char).startswith("L")
        assert c.name == unicodedata.name(c.char).lower()
        assert len(c.fonts) >= 6
    assert len({c.name for c in classes}) == len(classes)
    fewer = glyphs.glyph_classes(min_fonts=12)
    assert 0 < len(fewer) < len(classes) and all(len(c.fonts) >= 12 for c in fewer)


def test_glyph_fonts_really_contain_the_glyph(classes) -> None:
    from fontTools.ttLib import TTFont

    fonts = sorted({f for c in classes for f in c.fonts})
    assert len(fonts) >= 12 and all(Path(f).name.startswith(("DejaVu", "STIXGeneral")) for f in fonts)
    cmaps = {f: TTFont(f, lazy=True).getBestCmap() for f in fonts}
    missing = [(c.char, Path(f).name) for c in classes for f in c.fonts if ord(c.char) not in cmaps[f]]
    assert not missing
    # and the fonts not listed for a class really lack it (the listing is complete)
    extra = [(c.char, Path(f).name) for c in classes for f in fonts
             if f not in c.fonts and ord(c.char) in cmaps[f]]
    assert len(extra) <= len(classes) // 20   # only fonts dropped for drawing no ink


def test_lookalikes_and_compatibility_variants_are_dropped(classes) -> None:
    chars = {c.char for c in classes}
    assert {"a", "e", "é", "ę", "ȩ", "o", "O", "ß", "Ω", "ж"} <= chars
    # Cyrillic а / Greek Α / Cyrillic о draw the Latin letter's picture; Kelvin sign K and 𝑎 are variants
    assert not {"\u0430", "\u0391", "\u043e", "\u212a", "\U0001d44e", "\u02b0"} & chars


def test_render_glyphs_deterministic_and_shaped(classes) -> None:
    chosen = classes[:5] + classes[-5:]
    a = glyphs.render_glyphs(chosen, per_class=4, seed=3)
    b = glyphs.render_glyphs(chosen, per_class=4, seed=3)
    c = glyphs.render_glyphs(chosen, per_class=4, seed=4)
    check_image_set(a, 40, 32)
    assert a.images.tobytes() == b.images.tobytes() and a.captions == b.captions
    assert a.images.tobytes() != c.images.tobytes()
    assert a.labels.tolist() == [i for i in range(10) for _ in range(4)]
    assert a.class_names == [g.name for g in chosen]
    assert all(caps[0] == f"the letter {a.class_names[y]}" for caps, y in zip(a.captions, a.labels))
    assert glyphs.render_glyphs(chosen[:2], per_class=3, seed=0, size=48).images.shape == (6, 48, 48, 3)


def test_glyph_images_show_a_dark_letter_inside_the_image(classes) -> None:
    s = glyphs.render_glyphs(classes[::40], per_class=8, seed=1)
    grey = s.images.astype(np.float32).mean(-1)
    for img in grey:
        bg = np.median(img)
        ink = img < bg - 40                               # dark strokes on a light background
        assert 4 <= ink.sum() <= 0.6 * img.size            # a letter, not blank, not a blob
        border = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
        assert border.mean() < 0.1                          # not cut by the image edge


def test_glyph_classes_differ_and_styles_are_cycled(classes) -> None:
    by_char = {c.char: c for c in classes}
    chosen = [by_char[ch] for ch in "eéęoO"]
    s = glyphs.render_glyphs(chosen, per_class=16, seed=2)
    ink = 255.0 - s.images.astype(np.float32).mean(-1)
    ink = ink - ink.mean((1, 2), keepdims=True)
    means = np.stack([ink[s.labels == k].mean(0) for k in range(5)])
    dist = np.abs(means[:, None] - means[None]).mean((2, 3))
    assert (dist[~np.eye(5, dtype=bool)] > 0).all()
    # within a class the styles vary: the 16 images use >= 8 different fonts' caption styles
    styles = {caps[1] for caps in s.captions[:16]}
    assert len(styles) >= 8


# ------------------------------------------------------------------------------------- splits
@pytest.mark.parametrize("n", [10, 300, 1351])
def test_class_disjoint_split_disjoint_covering_proportional(n: int) -> None:
    s = splits.class_disjoint_split(n, seed=7, test_fraction=0.5, val_fraction=0.2)
    parts = [set(s[k].tolist()) for k in ("train", "val", "test")]
    assert set().union(*parts) == set(range(n)) and sum(map(len, parts)) == n
    assert abs(len(parts[2]) - n * 0.5) <= 1
    assert abs(len(parts[1]) - (n - len(parts[2])) * 0.2) <= 1
    assert all(s[k].dtype == np.int64 for k in s)
    again = splits.class_disjoint_split(n, seed=7, test_fraction=0.5, val_fraction=0.2)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    if n >= 300:
        assert not np.array_equal(s["test"], splits.class_disjoint_split(n, seed=8, test_fraction=0.5, val_fraction=0.2)["test"])
    custom = splits.class_disjoint_split(n, seed=7, test_fraction=0.3, val_fraction=0.0)
    assert len(custom["val"]) == 0 and abs(len(custom["test"]) - 0.3 * n) <= 1


def test_stratified_split_per_class_proportions() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 80, 1000])
    fr = {"train": 0.7, "val": 0.1, "test": 0.2}
    s = splits.stratified_split(labels, fr, seed=0)
    all_idx = np.concatenate(list(s.values()))
    assert len(all_idx) == len(labels) and len(np.unique(all_idx)) == len(labels)
    for c, size in enumerate([100, 50, 80, 1000]):
        for k, f in fr.items():
            assert abs((labels[s[k]] == c).sum() - f * size) <= 1
    same = splits.stratified_split(labels, fr, seed=0)
    assert all(np.array_equal(s[k], same[k]) for k in s)
    assert not np.array_equal(s["test"], splits.stratified_split(labels, fr, seed=1)["test"])
    part = splits.stratified_split(labels, {"train": 0.5}, seed=0)   # sums < 1: the rest is unused
    assert len(part["train"]) == 615
    with pytest.raises(ValueError):
        splits.stratified_split(labels, {"a": 0.8, "b": 0.3}, seed=0)


# ------------------------------------------------------------------------------------- shapes
def nearest_colour(pixels: np.ndarray) -> np.ndarray:
    names = list(common.COLORS)
    ref = np.array([common.COLORS[c] for c in names], np.float32)
    return np.array(names)[np.argmin(((pixels[:, None, :] - ref[None]) ** 2).sum(-1), axis=1)]


def object_mask(img: np.ndarray) -> np.ndarray:
    """Pixels far from the background (the median of the border), keeping the clearest ones."""
    x = img.astype(np.float32)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    dist = np.linalg.norm(x - np.median(border, 0), axis=-1)
    return (dist > 50) & (dist >= 0.7 * dist.max())


def test_render_shapes_deterministic_and_shaped(shape_set) -> None:
    check_image_set(shape_set, 600, 32)
    again = shapes.render_shapes(600, seed=5)
    assert shape_set.images.tobytes() == again.images.tobytes() and shape_set.captions == again.captions
    assert shape_set.images.tobytes() != shapes.render_shapes(600, seed=6).images.tobytes()
    assert shape_set.class_names == shapes.shape_class_names() and len(shape_set.class_names) == 64
    assert len(set(shape_set.class_names)) == 64
    assert len(set(shape_set.labels.tolist())) == 64             # 600 draws cover all 64 classes
    assert all(4 <= len(c) <= 5 and len(set(c)) == len(c) for c in shape_set.captions)
    assert shapes.render_shapes(0, seed=0).images.shape == (0, 32, 32, 3)
    assert shapes.render_shapes(3, seed=0, size=64).images.shape == (3, 64, 64, 3)


def test_shape_attributes_match_labels(shape_set) -> None:
    attrs = shapes.shape_attributes(600, seed=5)
    assert len(attrs) == 600
    for a, y in zip(attrs, shape_set.labels):
        assert set(a) == {"shape", "color", "size", "position"}
        assert shape_set.class_names[y] == f"{a['color']} {a['shape']}"
        assert a["size"] in shapes.SIZES and a["position"] in shapes.POSITIONS


def test_shape_colour_is_the_named_colour(shape_set) -> None:
    attrs = shapes.shape_attributes(600, seed=5)
    for img, a in zip(shape_set.images, attrs):
        obj = object_mask(img)
        names, counts = np.unique(nearest_colour(img[obj].astype(np.float32)), return_counts=True)
        assert names[np.argmax(counts)] == a["color"], a


def test_shape_size_and_position_are_visible(shape_set) -> None:
    attrs = shapes.shape_attributes(600, seed=5)
    extent: dict[str, list[int]] = {"small": [], "large": []}
    for img, a in zip(shape_set.images, attrs):
        x = img.astype(np.float32)
        border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
        obj = np.linalg.norm(x - np.median(border, 0), axis=-1) > 60
        ys, xs = np.nonzero(obj)
        cx, cy = (xs.min() + xs.max()) / 62, (ys.min() + ys.max()) / 62
        pos = a["position"]
        if pos == "center":
            assert abs(cx - 0.5) < 0.1 and abs(cy - 0.5) < 0.1, a
        else:
            assert (cy < 0.5) == ("top" in pos) and (cx < 0.5) == ("left" in pos), a
            assert min(abs(cx - 0.5), abs(cy - 0.5)) > 0.1, a        # clearly off-centre
        extent[a["size"]].append(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
    # "small" and "large" are absolute: every small shape is smaller than every large one
    assert max(extent["small"]) < min(extent["large"]), (max(extent["small"]), min(extent["large"]))


def test_shape_captions_are_true_and_name_nothing_else(shape_set) -> None:
    attrs = shapes.shape_attributes(600, seed=5)
    for caps, a in zip(shape_set.captions, attrs):
        assert caps[0] in (f"a {a['color']} {a['shape']}", f"an {a['color']} {a['shape']}")
        for cap in caps:
            assert re.search(rf"\b{a['shape']}\b", cap) and re.search(rf"\b{a['color']}\b", cap)
            assert not [s for s in shapes.SHAPES if s != a["shape"] and s in cap], cap
            assert not [c for c in common.COLORS if c != a["color"] and re.search(rf"\b{c}\b", cap)], cap
            other_size = "large" if a["size"] == "small" else "small"
            assert other_size not in cap
            assert not re.search(r"\ba [aeiou]", cap), cap     # "a orange" would be bad English
            for word in ("left", "right", "top", "bottom", "upper", "lower"):
                if word in cap:
                    side = {"upper": "top", "lower": "bottom"}.get(word, word)
                    assert side in a["position"], (cap, a)
            if "center" in cap or "middle" in cap:
                assert a["position"] == "center", (cap, a)


# ------------------------------------------------------------------------------------- animals
def test_animal_mnist_ten_classes_of_a_thousand(animal_set) -> None:
    check_image_set(animal_set, 10_000, 32)
    assert animal_set.class_names == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse",
                                   "sheep", "zebra"]
    assert np.bincount(animal_set.labels).tolist() == [1000] * 10
    img = animal_set.images
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    assert 0.1 < (img[..., 0] > 127).mean() < 0.7             # white animal on black
    for caps, y in zip(animal_set.captions[::997], animal_set.labels[::997]):
        name = animal_set.class_names[y]
        assert caps == [f"a silhouette of {'an' if name[0] in 'aeiou' else 'a'} {name}",
                        f"a black and white picture of {'an' if name[0] in 'aeiou' else 'a'} {name}"]
    assert animals.load_animal_mnist(size=28).images.shape == (10_000, 28, 28, 3)


def test_animal_mnist_split_is_stratified(animal_set) -> None:
    s = splits.stratified_split(animal_set.labels, {"train": 0.8, "test": 0.2}, seed=0)
    assert np.bincount(animal_set.labels[s["train"]]).tolist() == [800] * 10
    assert np.bincount(animal_set.labels[s["test"]]).tolist() == [200] * 10


# ------------------------------------------------------------------------------------- prompts
def test_class_prompts() -> None:
    assert prompts.class_prompts(["orange circle", "bear"]) == ["a photo of an orange circle", "a photo of a bear"]
    assert prompts.class_prompts(["x"], template="{} letter") == ["x letter"]
    assert prompts.class_prompts(["elephant"], template="a drawing of a {}.") == ["a drawing of an elephant."]


# ------------------------------------------------------------------------------------- flags
@pytest.fixture(scope="module")
def flag_set() -> common.ImageSet:
    return flags.render_flags(flags.flag_classes(40, seed=3), per_class=4, seed=5)


def test_flag_classes_are_every_layout_with_distinct_ordered_colours() -> None:
    pool = flags.all_flag_classes()
    assert len(pool) == len({c.name for c in pool}) == 3 * 9 * 8 * 7 + 9 * 9 * 8   # 3 three-colour layouts
    assert all(len(set(c.colors)) == len(c.colors) == flags.FLAG_LAYOUTS[c.layout][0] for c in pool)
    drawn = flags.flag_classes(300, seed=0)
    assert len({c.name for c in drawn}) == 300 and drawn == flags.flag_classes(300, seed=0)
    assert drawn != flags.flag_classes(300, seed=1)
    with pytest.raises(ValueError, match="n_classes"):
        flags.flag_classes(len(pool) + 1, seed=0)


def test_render_flags_deterministic_and_shaped(flag_set) -> None:
    check_image_set(flag_set, 160, 32)
    again = flags.render_flags(flags.flag_classes(40, seed=3), per_class=4, seed=5)
    assert flag_set.images.tobytes() == again.images.tobytes() and flag_set.captions == again.captions
    assert flag_set.labels.tolist() == [i for i in range(40) for _ in range(4)]
    assert all(caps[0] == f"a {flag_set.class_names[y]}" for caps, y in zip(flag_set.captions, flag_set.labels))


def test_flag_images_show_their_colours_in_their_layout() -> None:
    """Each named colour covers a visible share of the image, and the layout puts it where it says."""
    cls = [flags.FlagClass("horizontal triband", ("red", "white", "blue")),
           flags.FlagClass("vertical bicolour", ("yellow", "green"))]
    s = flags.render_flags(cls, per_class=6, seed=0)
    palette = {n: np.array(c, np.float32) for n, c in flags.FLAG_COLORS.items()}
    for img, label in zip(s.images.astype(np.float32), s.labels):
        names = cls[label].colors
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        refs = np.stack([palette[n] for n in names] + [np.median(border, axis=0)])   # the flag's colours + ground
        nearest = np.linalg.norm(img[:, :, None] - refs, axis=-1).argmin(-1)
        masks = {n: nearest == i for i, n in enumerate(names)}
        assert all(m.mean() > 0.04 for m in masks.values()), names
        ys, xs = np.mgrid[0:32, 0:32]
        centre = {n: (ys[m].mean(), xs[m].mean()) for n, m in masks.items()}
        if cls[label].layout == "horizontal triband":   # red above white above blue (rotation ≤ 10°)
            assert centre["red"][0] < centre["white"][0] < centre["blue"][0]
        else:                                            # yellow left of green
            assert centre["yellow"][1] < centre["green"][1]


# ------------------------------------------------------------------------------------- patterns, symbols
def test_patterns_labels_captions_and_vocabulary() -> None:
    s = patterns.render_patterns(128, seed=2)
    check_image_set(s, 128, 32)
    assert s.images.tobytes() == patterns.render_patterns(128, seed=2).images.tobytes()
    attrs = patterns.pattern_attributes(128, seed=2)
    for caps, label, a in zip(s.captions, s.labels, attrs):
        assert s.class_names[label] == f"pattern of {a['color']} {a['pattern']}"
        assert len(caps) == 5 and len(set(caps)) == 5 and caps[0] == f"a pattern of {a['color']} {a['pattern']}"
        assert all(a["color"] in c and a["pattern"] in c for c in caps)
        words = set(" ".join(caps).replace(",", " ").split())
        assert not words & set(shapes.SHAPES), caps   # no shapes-world class word
    assert len(set(s.labels.tolist())) > 40


def test_symbol_classes_are_named_symbols_outside_the_excluded_blocks() -> None:
    import unicodedata

    symbols = glyphs.glyph_classes(kind="symbols")
    assert len(symbols) >= 300
    for c in symbols:
        assert unicodedata.category(c.char) in ("So", "Sm", "Sc")
        assert not (0x2500 <= ord(c.char) <= 0x259F or 0x2800 <= ord(c.char) <= 0x28FF)
    picked = glyphs.glyph_partition("symbols", 0, 20)
    assert len(picked) == 20 and not {c.char for c in picked} & {c.char for c in glyphs.glyph_partition("symbols", 20, 20)}
    s = glyphs.render_glyphs(picked, per_class=2, seed=0, noun="symbol")
    assert s.captions[0][0] == f"the symbol {picked[0].name}"


# ------------------------------------------------------------------------------------- web subsets
def test_web_subsets_validate_their_options() -> None:
    assert web.check_web_subset("shapes", {"train": 10, "test": 5}) is None
    assert "unknown subset" in web.check_web_subset("cars", {})
    assert "unknown option" in web.check_web_subset("shapes", {"train": 10, "tets": 5})
    assert "sum to at most 1" in web.check_web_subset("animals", {"train": 0.8, "test": 0.4})
    assert "integers" in web.check_web_subset("patterns", {"train": 0.5})
    assert "n_classes" in web.check_web_subset("symbols", {"per_class": 4, "train": 1.0})


def test_web_subset_splits_follow_the_options() -> None:
    built = builders.build_web_subset("symbols", {"n_classes": 6, "per_class": 10, "train": 0.5, "test": 0.3}, seed=0)
    counts = {s: built.splits.count(s) for s in set(built.splits)}
    assert counts == {"train": 30, "test": 18}                  # the other 20 % are left out
    for c in range(6):                                          # per class
        assert sum(1 for s, y in zip(built.splits, built.images.labels) if y == c and s == "train") == 5
    shapes = builders.build_web_subset("shapes", {"train": 7, "val": 3}, seed=0)
    assert shapes.splits == ["train"] * 7 + ["val"] * 3


def test_glyph_variation_limits_styles_and_rotation(classes) -> None:
    chosen = classes[:4]
    plain = glyphs.GlyphVariation(styles=("DejaVuSans",), size=(0.7, 0.7), max_rotation=0.0)
    s = glyphs.render_glyphs(chosen, per_class=6, seed=0, variation=plain)
    assert {caps[1].split(" ", 1)[1] for caps in s.captions} == {f"sans-serif {c.name}" for c in chosen}
    # the config form builds the same variation
    assert glyphs.glyph_variation({"styles": ["DejaVuSans"], "max_rotation": 0, "size": [0.7, 0.7]}) == plain
    with pytest.raises(ValueError, match="has none of the styles"):
        glyphs.render_glyphs(chosen, per_class=1, seed=0, variation=glyphs.GlyphVariation(styles=("NoSuchFont",)))
