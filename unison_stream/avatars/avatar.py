"""The avatar as a value: a picture at the model's framing, a caption, a seed, and where it came
from (``docs/avatars.md``).

An :class:`Avatar` is what a session needs to look like someone: the engine takes
``picture`` as its ``reference_frame`` and ``caption`` as its caption. It is built by one of the
sources in :mod:`.sources` (an uploaded image, a character design, a world identity number) and
is immutable: the picture array is read-only. ``provenance`` is JSON: what the avatar was made
from (the upload's digest and face box, the design, the identity number).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_CAPTION", "SOURCES", "Avatar"]

SOURCES = ("upload", "design", "identity")
DEFAULT_CAPTION = "a person talking in a quiet room"  # the engine's own default caption


@dataclass(frozen=True)
class Avatar:
    """A normalised reference picture and what goes with it."""

    picture: np.ndarray  # (H, W, 3) uint8 at the model's framing (MediaConfig width × height)
    caption: str = DEFAULT_CAPTION
    seed: int = 0  # the session's noise seed
    source: str = "upload"  # one of SOURCES
    provenance: dict[str, Any] = field(default_factory=dict)  # JSON: what it was made from

    def __post_init__(self) -> None:
        p = self.picture
        assert p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8, (
            f"an avatar's picture is (H, W, 3) uint8, not {p.shape} {p.dtype}"
        )
        assert self.source in SOURCES, f"source must be one of {SOURCES}, not {self.source!r}"
        frozen = np.array(p, copy=True)
        frozen.flags.writeable = False
        object.__setattr__(self, "picture", frozen)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture."""
        return self.picture.shape[1], self.picture.shape[0]

    def png(self) -> bytes:
        """The picture as PNG bytes (lossless: what the store keeps)."""
        buf = io.BytesIO()
        Image.fromarray(self.picture).save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def preview_png(self, *, scale: int = 2) -> bytes:
        """The picture ``scale``× larger (bicubic) as PNG bytes, for a page or a list view."""
        w, h = self.size
        img = Image.fromarray(self.picture).resize((w * scale, h * scale), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def meta(self) -> dict[str, Any]:
        """Everything but the picture, as JSON."""
        return {
            "caption": self.caption,
            "seed": self.seed,
            "source": self.source,
            "provenance": self.provenance,
            "width": self.size[0],
            "height": self.size[1],
        }

    @classmethod
    def from_stored(cls, png: bytes, meta: dict[str, Any]) -> Avatar:
        """The avatar :meth:`png` and :meth:`meta` describe."""
        with Image.open(io.BytesIO(png)) as img:
            picture = np.asarray(img.convert("RGB"))
        return cls(
            picture=picture,
            caption=str(meta["caption"]),
            seed=int(meta["seed"]),
            source=str(meta["source"]),
            provenance=dict(meta.get("provenance") or {}),
        )
