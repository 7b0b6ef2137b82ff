"""Uploaded bytes → an RGB array, or a typed error saying how to fix the upload.

Accepted: PNG, JPEG and WebP (recognised by their first bytes, not by a name or a MIME type),
at most :data:`MAX_BYTES` and :data:`MAX_PIXELS`, at least :data:`MIN_SIDE` pixels a side. The
pixel limit is checked from the header before anything is decoded, so a small file that
would expand to gigabytes is refused cheaply. EXIF orientation is applied (phones store
portraits sideways); an animated file gives its first frame; transparency is laid over
:data:`MATTE`. No I/O: bytes in, array out.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from unison_stream.avatars.errors import (
    CorruptImageError,
    ImageTooLargeError,
    InvalidImageError,
    NotAnImageError,
)

__all__ = ["FORMATS", "MATTE", "MAX_BYTES", "MAX_PIXELS", "MIN_SIDE", "decode_image", "sniff"]

MAX_BYTES = 4 * 1024 * 1024  # an upload's size; a phone photo saved as JPEG fits
MAX_PIXELS = 4096 * 4096  # decoded size; the model's framing is 128 px, more is never needed
MIN_SIDE = 64  # below this a face has too few pixels to check
MATTE = (240, 230, 200)  # transparent pixels are laid over this (the world's "cream" wall)
FORMATS = ("PNG", "JPEG", "WEBP")


def sniff(data: bytes) -> str | None:
    """The format of ``data`` from its magic bytes (one of :data:`FORMATS`), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes) -> np.ndarray:
    """``data`` (an upload's bytes) → ``(H, W, 3)`` uint8 RGB, upright."""
    if len(data) > MAX_BYTES:
        raise ImageTooLargeError(
            f"the image is {len(data) / 2**20:.1f} MiB; the limit is {MAX_BYTES / 2**20:.0f} MiB "
            "(save it as JPEG, or scale it down: 1024 px a side is plenty)"
        )
    fmt = sniff(data)
    if fmt is None:
        raise NotAnImageError(
            "the upload is not a PNG, JPEG or WebP image (other formats, e.g. HEIC or GIF, "
            "must be converted first)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"the image is {w}×{h} pixels; the limit is {MAX_PIXELS / 1e6:.0f} megapixels "
                    "(scale it down: 1024 px a side is plenty)"
                )
            if min(w, h) < MIN_SIDE:
                raise InvalidImageError(
                    f"the image is {w}×{h} pixels; each side needs at least {MIN_SIDE} "
                    "(use a larger picture of the face)"
                )
            img.seek(0)
            img.load()
            rgba = (ImageOps.exif_transpose(img) or img).convert("RGBA")
    except InvalidImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as e:
        raise CorruptImageError(
            f"the {fmt} file does not decode ({e}); it may be cut short — upload it again, "
            "or re-save it with an image editor"
        ) from e
    matte = Image.new("RGBA", rgba.size, (*MATTE, 255))
    return np.asarray(Image.alpha_composite(matte, rgba).convert("RGB"))
