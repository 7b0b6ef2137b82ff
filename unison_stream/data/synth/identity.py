"""Avatar identities: a small set of discrete traits, each drawn from a named palette.

An identity is the tuple of trait indices (face shape, skin, hair style and colour, eyes,
clothes style and colour, background style and colour). The product of the palette sizes is
the number of distinct identities (:func:`num_combinations`, far above the 1,000 the issue
asks for); :func:`identity_key` gives a stable string so splits can hold identities out.
Colours are RGB; none comes near :data:`MOUTH_INTERIOR`, which the tests use to measure the
mouth opening from pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "CLOTHES",
    "EYE_COLORS",
    "FACE_SHAPES",
    "HAIR_COLORS",
    "HAIR_STYLES",
    "MOUTH_INTERIOR",
    "SKIN_TONES",
    "Identity",
    "identity_key",
    "num_combinations",
    "sample_identity",
]

RGB = tuple[int, int, int]

# Face shapes: (name, half-width, half-height as fractions of the frame, corner roundness 0..1).
FACE_SHAPES: tuple[tuple[str, float, float, float], ...] = (
    ("oval", 0.20, 0.26, 1.0),
    ("round", 0.22, 0.23, 1.0),
    ("square", 0.21, 0.24, 0.45),
    ("long", 0.18, 0.27, 0.8),
    ("heart", 0.215, 0.25, 1.0),
    ("wide", 0.24, 0.24, 0.7),
)
SKIN_TONES: tuple[tuple[str, RGB], ...] = (
    ("porcelain", (250, 224, 206)),
    ("fair", (241, 204, 178)),
    ("light", (226, 185, 150)),
    ("olive", (201, 160, 118)),
    ("tan", (180, 132, 95)),
    ("brown", (140, 97, 66)),
    ("dark", (104, 70, 48)),
    ("deep", (78, 52, 38)),
)
HAIR_STYLES: tuple[str, ...] = ("bald", "buzz", "short", "bob", "long", "bun", "spiky", "curly")
HAIR_COLORS: tuple[tuple[str, RGB], ...] = (
    ("black", (35, 32, 34)),
    ("dark brown", (74, 50, 34)),
    ("brown", (120, 78, 44)),
    ("auburn", (150, 70, 40)),
    ("blond", (222, 190, 120)),
    ("grey", (165, 165, 170)),
    ("white", (236, 236, 232)),
    ("blue", (60, 100, 200)),
    ("pink", (232, 120, 170)),
)
EYE_COLORS: tuple[tuple[str, RGB], ...] = (
    ("brown", (100, 62, 30)),
    ("hazel", (140, 110, 50)),
    ("green", (60, 130, 70)),
    ("blue", (60, 110, 190)),
    ("grey", (120, 130, 140)),
    ("amber", (190, 130, 40)),
)
CLOTHES: tuple[str, ...] = ("t-shirt", "v-neck", "collared shirt", "hoodie", "striped top")
CLOTHES_COLORS: tuple[tuple[str, RGB], ...] = (
    ("red", (200, 50, 50)),
    ("navy", (40, 50, 110)),
    ("green", (60, 140, 80)),
    ("yellow", (230, 200, 60)),
    ("white", (235, 235, 235)),
    ("black", (40, 40, 45)),
    ("orange", (235, 130, 40)),
    ("purple", (120, 70, 160)),
    ("teal", (40, 150, 150)),
    ("grey", (130, 130, 135)),
)
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "stripes", "dots", "window", "bookshelf")
BACKGROUND_COLORS: tuple[tuple[str, RGB], ...] = (
    ("sky blue", (150, 190, 230)),
    ("cream", (240, 230, 200)),
    ("sage", (170, 200, 160)),
    ("lilac", (200, 180, 225)),
    ("peach", (245, 200, 170)),
    ("slate", (100, 115, 130)),
    ("charcoal", (60, 62, 70)),
    ("mint", (190, 235, 215)),
)
MOUTH_INTERIOR: RGB = (95, 0, 35)  # dark red; far from every palette colour above
LIP_TINT = np.array([0.78, 0.52, 0.55])  # lips = skin × tint


@dataclass(frozen=True)
class Identity:
    """Trait indices into the palettes above, plus continuous proportions."""

    face_shape: int
    skin: int
    hair_style: int
    hair_color: int
    eye_color: int
    clothes: int
    clothes_color: int
    background: int
    background_color: int
    eye_spacing: float  # fraction of face half-width between the eye centres and the midline
    mouth_width: float  # fraction of face half-width

    def describe(self) -> dict[str, str]:
        """Human-readable trait names (used in captions)."""
        return {
            "face": FACE_SHAPES[self.face_shape][0],
            "skin": SKIN_TONES[self.skin][0],
            "hair": HAIR_STYLES[self.hair_style],
            "hair_color": HAIR_COLORS[self.hair_color][0],
            "eyes": EYE_COLORS[self.eye_color][0],
            "clothes": CLOTHES[self.clothes],
            "clothes_color": CLOTHES_COLORS[self.clothes_color][0],
            "background": BACKGROUNDS[self.background],
            "background_color": BACKGROUND_COLORS[self.background_color][0],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Identity:
        """The identity of a manifest row's ``"identity"`` (:meth:`to_json`; names ignored)."""
        return cls(**{k: v for k, v in d.items() if k != "names"})

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        d["eye_spacing"] = round(self.eye_spacing, 4)
        d["mouth_width"] = round(self.mouth_width, 4)
        d["names"] = self.describe()
        return d


_SIZES = (
    len(FACE_SHAPES),
    len(SKIN_TONES),
    len(HAIR_STYLES),
    len(HAIR_COLORS),
    len(EYE_COLORS),
    len(CLOTHES),
    len(CLOTHES_COLORS),
    len(BACKGROUNDS),
    len(BACKGROUND_COLORS),
)


def num_combinations() -> int:
    """How many distinct discrete identities the palettes allow."""
    return math.prod(_SIZES)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity; clothes never share the background colour name."""
    idx = [int(rng.integers(n)) for n in _SIZES]
    if CLOTHES_COLORS[idx[6]][1] == BACKGROUND_COLORS[idx[8]][1]:
        idx[6] = (idx[6] + 1) % len(CLOTHES_COLORS)
    face, skin, hair, hair_color, eyes, clothes, clothes_color, bg, bg_color = idx
    return Identity(
        face_shape=face,
        skin=skin,
        hair_style=hair,
        hair_color=hair_color,
        eye_color=eyes,
        clothes=clothes,
        clothes_color=clothes_color,
        background=bg,
        background_color=bg_color,
        eye_spacing=float(rng.uniform(0.38, 0.48)),
        mouth_width=float(rng.uniform(0.36, 0.48)),
    )


def identity_key(identity: Identity) -> str:
    """Stable key of the discrete traits; two identities with one key look alike."""
    return "-".join(
        str(v)
        for v in (
            identity.face_shape,
            identity.skin,
            identity.hair_style,
            identity.hair_color,
            identity.eye_color,
            identity.clothes,
            identity.clothes_color,
            identity.background,
            identity.background_color,
        )
    )
