"""The one door from avatars to the synthetic world's drawing code (``unison_stream.data.synth``).

Everything the avatar sources need from the world goes through here, imported lazily, so the
world's portrait is one source among three and the rest of :mod:`unison_stream.avatars` never
names the world's modules:

* :func:`options`: each trait's names (face shape, skin, hair, …) and the accessories the
  world's renderer draws;
* :func:`draw`: a neutral portrait of chosen traits, with free RGB colours and accessories;
* :func:`identity_traits`: the traits of world identity number ``n`` (the engine's
  ``identity``), drawn with the same seed as the engine draws them.

Free colours and accessories pass through the world's own :class:`~unison_stream.data.synth.
identity.Look` (free RGB per colour slot, glasses, headwear, earrings, one accessory colour):
a design with any free colour or accessory becomes an identity with a look, every slot it
leaves out taking its trait's palette colour, and :func:`~unison_stream.data.synth.face.
portrait` draws it. A design without either draws the palette identity itself, pixel for pixel
the engine's portrait of that identity (``docs/data.md``, "looks").
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "ACCESSORIES",
    "COLOUR_SLOTS",
    "DEFAULT_ACCESSORY_COLOUR",
    "TRAITS",
    "draw",
    "identity_traits",
    "mouth_colour",
    "options",
]

RGB = tuple[int, int, int]
# design trait name → (Identity field, palette name in data.synth.identity)
TRAITS: dict[str, tuple[str, str]] = {
    "face": ("face_shape", "FACE_SHAPES"),
    "skin": ("skin", "SKIN_TONES"),
    "hair": ("hair_style", "HAIR_STYLES"),
    "hair_color": ("hair_color", "HAIR_COLORS"),
    "eyes": ("eye_color", "EYE_COLORS"),
    "clothes": ("clothes", "CLOTHES"),
    "clothes_color": ("clothes_color", "CLOTHES_COLORS"),
    "background": ("background", "BACKGROUNDS"),
    "background_color": ("background_color", "BACKGROUND_COLORS"),
}
COLOUR_SLOTS = ("skin", "hair_color", "eyes", "clothes_color", "background_color")
# colour slot → the Look field that carries it
_LOOK_FIELD = {
    "skin": "skin",
    "hair_color": "hair",
    "eyes": "eyes",
    "clothes_color": "clothes",
    "background_color": "background",
}
PROPORTIONS = ("eye_spacing", "mouth_width")  # continuous traits, fractions of the face
# a design's accessory name → (Look field, value); "glasses" is the round pair
ACCESSORIES: dict[str, tuple[str, Any]] = {
    "glasses": ("glasses", "round"),
    "round glasses": ("glasses", "round"),
    "square glasses": ("glasses", "square"),
    "hat": ("headwear", "hat"),
    "headband": ("headwear", "headband"),
    "earrings": ("earrings", True),
}
DEFAULT_ACCESSORY_COLOUR: RGB = (45, 45, 52)  # near-black frames and hats, clear of the mouth


def _identity_module() -> Any:
    from unison_stream.data.synth import identity

    return identity


def _palette(trait: str) -> tuple[Any, ...]:
    return tuple(getattr(_identity_module(), TRAITS[trait][1]))


def _name(entry: Any) -> str:
    return entry if isinstance(entry, str) else str(entry[0])


def options() -> dict[str, tuple[str, ...]]:
    """Each trait's names in palette order, ``accessories`` (what the renderer draws) and
    ``free_colours`` (the slots that take a free colour: all of :data:`COLOUR_SLOTS`)."""
    out = {t: tuple(_name(e) for e in _palette(t)) for t in TRAITS}
    ident = _identity_module()
    drawn = {"glasses": ident.GLASSES, "headwear": ident.HEADWEAR, "earrings": (True,)}
    out["accessories"] = tuple(a for a, (f, v) in ACCESSORIES.items() if v in drawn[f])
    out["free_colours"] = COLOUR_SLOTS
    return out


def palette_colour(trait: str, index: int) -> RGB:
    """The RGB of entry ``index`` of colour slot ``trait``."""
    r, g, b = (int(v) for v in _palette(trait)[index][1])
    return (r, g, b)


def mouth_colour() -> RGB:
    """The colour the world paints the inside of an open mouth (the lip-sync measure's)."""
    r, g, b = (int(v) for v in _identity_module().MOUTH_INTERIOR)
    return (r, g, b)


def identity_traits(number: int) -> dict[str, Any]:
    """Trait indices and proportions of world identity ``number`` (the engine's ``identity``:
    the identity drawn from ``numpy.random.default_rng(number)``), keyed as :data:`TRAITS` and
    :data:`PROPORTIONS`."""
    ident = _identity_module().sample_identity(np.random.default_rng(number))
    out: dict[str, Any] = {t: getattr(ident, field) for t, (field, _) in TRAITS.items()}
    out.update({p: float(getattr(ident, p)) for p in PROPORTIONS})
    return out


def _look(
    traits: dict[str, Any], colours: dict[str, RGB], accessories: tuple[str, ...], accessory: RGB
) -> Any:
    """The world's ``Look``: each colour slot free or its trait's palette colour, and the
    accessories (names of :data:`ACCESSORIES`; the caller checked them)."""
    slots = {
        _LOOK_FIELD[s]: colours.get(s) or palette_colour(s, int(traits[s])) for s in COLOUR_SLOTS
    }
    worn: dict[str, Any] = {}
    for name in accessories:
        field, value = ACCESSORIES[name]
        worn[field] = value
    return _identity_module().Look(**slots, accessory=accessory, **worn)


def draw(
    traits: dict[str, Any],
    *,
    colours: dict[str, RGB],
    accessories: tuple[str, ...] = (),
    accessory_colour: RGB = DEFAULT_ACCESSORY_COLOUR,
    width: int,
    height: int,
) -> np.ndarray:
    """A neutral portrait ``(height, width, 3)`` uint8: ``traits`` (indices keyed as
    :data:`TRAITS`, plus :data:`PROPORTIONS`), free ``colours`` per colour slot (RGB), and the
    world's ``accessories`` in ``accessory_colour``. The caller checks names against
    :func:`options`."""
    from unison_stream.data.synth.config import WorldConfig
    from unison_stream.data.synth.face import portrait

    fields: dict[str, Any] = {TRAITS[t][0]: int(traits[t]) for t in TRAITS}
    fields.update({p: float(traits[p]) for p in PROPORTIONS})
    look = _look(traits, colours, accessories, accessory_colour)
    ident = _identity_module().Identity(**fields, look=look if colours or accessories else None)
    picture: np.ndarray = portrait(
        ident, width=width, height=height, supersample=WorldConfig().supersample
    )
    return picture
