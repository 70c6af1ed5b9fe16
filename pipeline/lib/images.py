"""Images as PIL sees them: decoding any mode to RGB, and the reference's deterministic views (docs/method.md#views-and-splits).

No torch here, so light stages (the neighbours grid, dataset checks) can use it without loading it.
"""
from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

ImageSource = bytes | str  # encoded image bytes (packed datasets) or a file path (datasets in place)


class ImageError(ValueError):
    """An image that cannot be decoded; the message names it."""


# PIL refuses an image whose header claims more than 2 x Image.MAX_IMAGE_PIXELS (179 Mpx) with
# DecompressionBombError, which is not an OSError: without it here such a file escapes as a traceback.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
CHECK_MODES = ("decode", "open")  # what `check_image` can do (prepare's `verify_images`, besides exists / none)


def _label(source: ImageSource, name: str) -> str:
    """A file is named by its path (what a user can find); packed bytes by the name they were given."""
    return source if isinstance(source, str) else (name or "<bytes>")


def _open(source: ImageSource) -> Image.Image:
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def decode_image(source: ImageSource, name: str = "") -> Image.Image:
    """Decode to RGB. Grey, palette, RGBA and CMYK images are converted; undecodable ones raise."""
    try:
        with _open(source) as img:
            img.load()
            return img.convert("RGB") if img.mode != "RGB" else img.copy()
    except DECODE_ERRORS as err:
        raise ImageError(f"cannot decode image {_label(source, name)}: {type(err).__name__}: {err}") from None


def check_image(source: ImageSource, mode: str = "decode", name: str = "") -> None:
    """Raise ImageError if the image would fail `decode_image`.

    `decode` decodes every byte of it: a JPEG at 1/8 scale (`draft`), which still entropy-decodes
    the whole stream, so a truncated or corrupt file fails exactly as at full size, in about 60 %
    of the time (docs/paper-setting.md). `open` only parses the header and the chunk structure
    (`Image.verify`): fast, but a truncated JPEG passes it.
    """
    if mode not in CHECK_MODES:
        raise ValueError(f"image check mode must be one of {CHECK_MODES}, got {mode!r}")
    try:
        with _open(source) as img:
            if mode == "open":
                img.verify()
                return
            if img.format == "JPEG":
                img.draft(img.mode, (1, 1))
            img.load()
    except Exception as err:  # noqa: BLE001 - whatever stops PIL parsing it makes the image bad
        raise ImageError(f"cannot decode image {_label(source, name)}: {type(err).__name__}: {err}") from None


def thumbnail(img: Image.Image, max_side: int) -> tuple[bytes, str, tuple[int, int]]:
    """(encoded bytes, MIME type, size) of a small copy for a page: an image within `max_side` stays
    as it is, losslessly (PNG); a larger one is shrunk to fit and JPEG-encoded (photos, a few kB)."""
    out = io.BytesIO()
    if max(img.size) <= max_side:
        img.save(out, format="PNG", optimize=True)
        return out.getvalue(), "image/png", img.size
    small = img.copy()
    small.thumbnail((max_side, max_side), Image.BILINEAR)
    small.save(out, format="JPEG", quality=85)
    return out.getvalue(), "image/jpeg", small.size


def eval_view(img: Image.Image, size: int) -> Image.Image:
    """Reference eval transform: shorter side → `size` (bilinear), then centre crop size×size."""
    w, h = img.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def train_base_view(img: Image.Image, resize: int) -> Image.Image:
    """Deterministic half of the train transform: resize to resize×resize, aspect not kept."""
    return img if img.size == (resize, resize) else img.resize((resize, resize), Image.BILINEAR)
