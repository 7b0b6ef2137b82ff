"""Avatar identities: discrete traits drawn from named palettes, or a free :class:`Look`.

A palette identity is the tuple of trait indices (face shape, skin, hair style and colour,
eyes, clothes style and colour, background style and colour). The product of the palette
sizes is the number of distinct palette identities (:func:`num_combinations`);
:func:`identity_key` gives a stable string so splits can hold identities out.

A *look* identity (:func:`sample_look_identity`) keeps the shapes and styles but takes its
colours as free RGB (green or purple skin included) and may wear accessories (glasses, a hat
or headband, earrings): the looks of pictures users bring. Its key holds every colour and
accessory. Colours are RGB; none comes near :data:`MOUTH_INTERIOR`, which the tests use to
measure the mouth opening from pixels, nor (skin) near the white of the eye.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "CLOTHES",
    "EYE_COLORS",
    "FACE_SHAPES",
    "GLASSES",
    "HAIR_COLORS",
    "HAIR_STYLES",
    "HEADWEAR",
    "MOUTH_INTERIOR",
    "SKIN_TONES",
    "Identity",
    "Look",
    "colour_name",
    "identity_key",
    "num_combinations",
    "sample_identity",
    "sample_look",
    "sample_look_identity",
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


GLASSES: tuple[str, ...] = ("round", "square")
HEADWEAR: tuple[str, ...] = ("hat", "headband")
SCLERA: RGB = (250, 250, 250)  # the white of the eye; a skin this pale would hide the eyes
SCLERA_DISTANCE = 50.0  # skin to eye white (measure.SCLERA_TOLERANCE; porcelain is at 52)
MIN_COLOUR_DISTANCE = 80.0  # RGB distance a free colour (not skin) keeps from the mouth interior
MIN_SHADE_DISTANCE = 50.0  # … and its darker shades: past the measure's 40 (measure.py)
SHADES = tuple(0.3 + 0.05 * k for k in range(15))  # 0.3 … 1.0: darkest shade drawn or blended
SKIN_SHADES = tuple(0.5 + 0.05 * k for k in range(11))  # 0.5 … 1.0: outlines and closed eyes
LIP_SHADES = tuple(0.6 + 0.05 * k for k in range(9))  # 0.6 … 1.0: lip line blended with lips
SKIN_DISTANCE = 40.0  # skin, its shades, lips and lip line (measure.MOUTH_TOLERANCE)
MIN_CONTRAST = 70.0  # RGB distance between skin and background (and clothes and background)
# Names for free colours in captions: the nearest of these by RGB distance.
COLOUR_NAMES: tuple[tuple[str, RGB], ...] = (
    ("black", (30, 30, 30)),
    ("grey", (128, 128, 128)),
    ("white", (240, 240, 240)),
    ("red", (200, 40, 40)),
    ("maroon", (120, 30, 40)),
    ("orange", (235, 135, 40)),
    ("yellow", (230, 210, 60)),
    ("olive", (130, 130, 40)),
    ("lime", (150, 220, 60)),
    ("green", (50, 150, 60)),
    ("teal", (40, 140, 140)),
    ("cyan", (80, 210, 220)),
    ("sky blue", (140, 190, 235)),
    ("blue", (50, 80, 200)),
    ("navy", (30, 40, 100)),
    ("purple", (120, 60, 170)),
    ("lilac", (195, 160, 225)),
    ("pink", (235, 130, 180)),
    ("magenta", (200, 50, 170)),
    ("brown", (120, 75, 40)),
    ("beige", (225, 205, 165)),
)


def _dist(a: RGB, b: RGB) -> float:
    return math.dist(a, b)


def _nearest(c: RGB, table: tuple[tuple[str, RGB], ...]) -> int:
    return min(range(len(table)), key=lambda i: _dist(c, table[i][1]))


def colour_name(c: RGB) -> str:
    """The plain-English name of a free colour (the nearest of :data:`COLOUR_NAMES`)."""
    return COLOUR_NAMES[_nearest(c, COLOUR_NAMES)][0]


def _skin_name(c: RGB) -> str:
    """A skin tone's name when the colour is near one (within 40), else the colour's name."""
    i = _nearest(c, SKIN_TONES)
    return SKIN_TONES[i][0] if _dist(c, SKIN_TONES[i][1]) < 40.0 else colour_name(c)


@dataclass(frozen=True)
class Look:
    """Free colours and accessories of an identity drawn off the palettes (users' pictures)."""

    skin: RGB
    hair: RGB
    eyes: RGB  # iris
    clothes: RGB
    background: RGB
    accessory: RGB  # glasses frame, hat or headband, earrings share one colour
    glasses: str = ""  # "" or one of GLASSES
    headwear: str = ""  # "" or one of HEADWEAR
    earrings: bool = False

    def accessories(self) -> list[str]:
        """Caption phrases of what the person wears besides clothes, e.g. ``["round glasses"]``."""
        out = []
        if self.glasses:
            out.append(f"{self.glasses} glasses")
        if self.headwear:
            out.append(f"a {colour_name(self.accessory)} {self.headwear}")
        if self.earrings:
            out.append("earrings")
        return out

    def key(self) -> str:
        """Every colour (hex) and accessory, for :func:`identity_key`."""
        hexes = "".join(
            f"{r:02x}{g:02x}{b:02x}"
            for r, g, b in (
                self.skin,
                self.hair,
                self.eyes,
                self.clothes,
                self.background,
                self.accessory,
            )
        )
        return f"{hexes}-{self.glasses or 'x'}-{self.headwear or 'x'}-{int(self.earrings)}"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Look:
        def rgb(name: str) -> RGB:
            r, g, b = (int(v) for v in d[name])
            return (r, g, b)

        return cls(
            skin=rgb("skin"),
            hair=rgb("hair"),
            eyes=rgb("eyes"),
            clothes=rgb("clothes"),
            background=rgb("background"),
            accessory=rgb("accessory"),
            glasses=str(d.get("glasses", "")),
            headwear=str(d.get("headwear", "")),
            earrings=bool(d.get("earrings", False)),
        )


@dataclass(frozen=True)
class Identity:
    """Trait indices into the palettes above, plus continuous proportions and an optional look.

    With a :class:`Look` the colour indices hold the nearest palette entry (so code that reads
    palettes still works) and the look's colours are the ones drawn and captioned.
    """

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
    look: Look | None = None  # free colours and accessories; None: the palettes' colours

    def colours(self) -> dict[str, RGB]:
        """RGB of ``skin``, ``hair``, ``eyes``, ``clothes``, ``background`` as drawn."""
        if self.look is not None:
            lk = self.look
            return {
                "skin": lk.skin,
                "hair": lk.hair,
                "eyes": lk.eyes,
                "clothes": lk.clothes,
                "background": lk.background,
            }
        return {
            "skin": SKIN_TONES[self.skin][1],
            "hair": HAIR_COLORS[self.hair_color][1],
            "eyes": EYE_COLORS[self.eye_color][1],
            "clothes": CLOTHES_COLORS[self.clothes_color][1],
            "background": BACKGROUND_COLORS[self.background_color][1],
        }

    def describe(self) -> dict[str, str]:
        """Human-readable trait names (used in captions); a look adds ``accessories``."""
        names = {
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
        if self.look is not None:
            lk = self.look
            names.update(
                skin=_skin_name(lk.skin),
                hair_color=colour_name(lk.hair),
                eyes=colour_name(lk.eyes),
                clothes_color=colour_name(lk.clothes),
                background_color=colour_name(lk.background),
                accessories=" and ".join(lk.accessories()),
            )
        return names

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Identity:
        """The identity of a manifest row's ``"identity"`` (:meth:`to_json`; names ignored)."""
        fields = {k: v for k, v in d.items() if k not in ("names", "look")}
        look = Look.from_json(d["look"]) if d.get("look") is not None else None
        return cls(**fields, look=look)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        d["eye_spacing"] = round(self.eye_spacing, 4)
        d["mouth_width"] = round(self.mouth_width, 4)
        if self.look is None:  # palette identities keep the rows they always had
            del d["look"]
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
    """Stable key of the traits; two identities with one key look alike.

    Palette identities: the trait indices. Look identities: ``L-`` + the shapes and styles +
    every free colour and accessory (:meth:`Look.key`), so a look never shares a key (and a
    split) with a palette identity or another look.
    """
    if identity.look is not None:
        shapes = (identity.face_shape, identity.hair_style, identity.clothes, identity.background)
        return "L-" + "-".join(str(v) for v in shapes) + "-" + identity.look.key()
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


def _free_rgb(rng: np.random.Generator) -> RGB:
    r, g, b = (int(v) for v in rng.integers(15, 241, 3))
    return (r, g, b)


def _natural_skin(rng: np.random.Generator) -> RGB:
    """A skin tone between two neighbouring palette tones, with a little jitter per channel.

    The place along the tones is drawn once; the jitter is redrawn until the skin is clear
    of the mouth interior and the eye white (:func:`_skin_clear`), else none is added (the
    palette's own tones are accepted as they are), so the light-to-deep spread stays even.
    """
    t = float(rng.uniform(0, len(SKIN_TONES) - 1))
    i = min(int(t), len(SKIN_TONES) - 2)
    lo, hi = np.array(SKIN_TONES[i][1]), np.array(SKIN_TONES[i + 1][1])
    base = lo + (t - i) * (hi - lo)
    for _ in range(50):
        r, g, b = (int(v) for v in np.clip(np.round(base + rng.uniform(-12, 12, 3)), 0, 255))
        if _skin_clear((r, g, b)):
            return (r, g, b)
    r, g, b = (int(v) for v in np.round(base))
    return (r, g, b)


def _clear_of_mouth(c: RGB) -> bool:
    """Whether ``c`` keeps :data:`MIN_COLOUR_DISTANCE` from the mouth interior and each of its
    shades ``c · f`` (``f`` in :data:`SHADES`) keeps :data:`MIN_SHADE_DISTANCE`.

    The renderer darkens colours (outlines, lip line, shading) and anti-aliases them against
    dark parts (the pupil), so the shades are checked, not just ``c``.
    """
    far = _dist(c, MOUTH_INTERIOR) >= MIN_COLOUR_DISTANCE
    return far and all(_dist(_scaled(c, f), MOUTH_INTERIOR) >= MIN_SHADE_DISTANCE for f in SHADES)


def _skin_clear(skin: RGB) -> bool:
    """Whether a skin, its shades, its lips and lip line keep :data:`SKIN_DISTANCE` from the
    mouth interior (the palette's skins come close: ``deep`` at 55, ``dark``'s lip line just
    under 40), and the skin :data:`SCLERA_DISTANCE` from the white of the eye."""
    lips: RGB = tuple(int(v) for v in np.array(skin) * LIP_TINT)  # type: ignore[assignment]
    shades = [_scaled(skin, f) for f in SKIN_SHADES] + [_scaled(lips, f) for f in LIP_SHADES]
    clear = min(_dist(c, MOUTH_INTERIOR) for c in shades) >= SKIN_DISTANCE
    return clear and _dist(skin, SCLERA) >= SCLERA_DISTANCE


def _scaled(c: RGB, f: float) -> RGB:
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def sample_look(
    rng: np.random.Generator,
    *,
    unnatural_skin: float,
    glasses: float,
    headwear: float,
    earrings: float,
) -> Look:
    """Free colours (skin unnatural with probability ``unnatural_skin``) and accessories.

    Colours are redrawn until no colour nor its darker shades is near the mouth interior (the
    skin and lips as far as the palette's are), the skin is clear of the white of the eye, and
    skin and clothes stand out from the background by :data:`MIN_CONTRAST`.
    """
    for _ in range(1000):
        unnatural = bool(rng.random() < unnatural_skin)
        skin = _free_rgb(rng) if unnatural else _natural_skin(rng)
        hair, eyes, clothes, background, accessory = (_free_rgb(rng) for _ in range(5))
        ok = (
            (_skin_clear(skin) or not unnatural)  # natural skins are made clear when drawn
            and all(_clear_of_mouth(c) for c in (hair, eyes, clothes, background, accessory))
            and _dist(skin, background) >= MIN_CONTRAST
            and _dist(clothes, background) >= MIN_CONTRAST
        )
        if ok:
            return Look(
                skin=skin,
                hair=hair,
                eyes=eyes,
                clothes=clothes,
                background=background,
                accessory=accessory,
                glasses=str(rng.choice(np.array(GLASSES))) if rng.random() < glasses else "",
                headwear=str(rng.choice(np.array(HEADWEAR))) if rng.random() < headwear else "",
                earrings=bool(rng.random() < earrings),
            )
    raise RuntimeError("no free colours met the contrast rules in 1000 draws")


def sample_look_identity(
    rng: np.random.Generator,
    *,
    unnatural_skin: float,
    glasses: float,
    headwear: float,
    earrings: float,
) -> Identity:
    """A palette identity's shapes and styles with a free :class:`Look` (see :func:`sample_look`);
    its colour indices are set to the nearest palette entries."""
    base = sample_identity(rng)
    look = sample_look(
        rng, unnatural_skin=unnatural_skin, glasses=glasses, headwear=headwear, earrings=earrings
    )
    return replace(
        base,
        skin=_nearest(look.skin, SKIN_TONES),
        hair_color=_nearest(look.hair, HAIR_COLORS),
        eye_color=_nearest(look.eyes, EYE_COLORS),
        clothes_color=_nearest(look.clothes, CLOTHES_COLORS),
        background_color=_nearest(look.background, BACKGROUND_COLORS),
        look=look,
    )
