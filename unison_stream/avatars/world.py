"""The one door from avatars to the synthetic world's drawing code (``unison_stream.data.synth``).

Everything the avatar sources need from the world goes through here, imported lazily, so the
world's portrait is one source among three and the rest of :mod:`unison_stream.avatars` never
names the world's modules:

* :func:`options`: each trait's names (face shape, skin, hair, …) and the accessories the
  world's renderer draws;
* :func:`draw`: a neutral portrait of chosen traits, with free RGB colours and accessories;
* :func:`identity_traits`: the traits of world identity number ``n`` (the engine's
  ``identity``), drawn with the same seed as the engine draws them.

Free colours: where the world's ``Identity`` has a field for a slot's free colour
(``<slot>_rgb``), the colour passes through and the world draws it. Where it does not, the
portrait is drawn twice with two palette colours of that slot and recoloured: each pixel is
linear in the slot's colour (flat fills, shades ``colour × f``, lips ``skin × tint``, area
averaging), so the two renders give each pixel's weight and the free colour is put in
to within two levels (the world truncates its shades). Accessories pass through to the
world's renderer when it draws them (:func:`options` lists them); none are invented here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["COLOUR_SLOTS", "TRAITS", "draw", "identity_traits", "mouth_colour", "options"]

RGB = tuple[int, int, int]
# design trait name → (Identity field, palette name in data.synth.identity, palette of colours?)
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
PROPORTIONS = ("eye_spacing", "mouth_width")  # continuous traits, fractions of the face


def _identity_module() -> Any:
    from unison_stream.data.synth import identity

    return identity


def _palette(trait: str) -> tuple[Any, ...]:
    return tuple(getattr(_identity_module(), TRAITS[trait][1]))


def _name(entry: Any) -> str:
    return entry if isinstance(entry, str) else str(entry[0])


def options() -> dict[str, tuple[str, ...]]:
    """Each trait's names in palette order, ``accessories`` (what the renderer draws, maybe
    none) and ``free_colours`` (the slots the world itself takes a free colour for)."""
    out = {t: tuple(_name(e) for e in _palette(t)) for t in TRAITS}
    out["accessories"] = tuple(getattr(_identity_module(), "ACCESSORIES", ()))
    fields = {f.name for f in dataclasses.fields(_identity_module().Identity)}
    out["free_colours"] = tuple(s for s in COLOUR_SLOTS if f"{TRAITS[s][0]}_rgb" in fields)
    return out


def palette_colour(trait: str, index: int) -> RGB:
    """The RGB of entry ``index`` of colour slot ``trait``."""
    return tuple(int(v) for v in _palette(trait)[index][1])  # type: ignore[return-value]


def mouth_colour() -> RGB:
    """The colour the world paints the inside of an open mouth (the lip-sync measure's)."""
    return tuple(int(v) for v in _identity_module().MOUTH_INTERIOR)  # type: ignore[return-value]


def identity_traits(number: int) -> dict[str, Any]:
    """Trait indices and proportions of world identity ``number`` (the engine's ``identity``:
    the identity drawn from ``numpy.random.default_rng(number)``), keyed as :data:`TRAITS` and
    :data:`PROPORTIONS`."""
    ident = _identity_module().sample_identity(np.random.default_rng(number))
    out: dict[str, Any] = {t: getattr(ident, field) for t, (field, _) in TRAITS.items()}
    out.update({p: float(getattr(ident, p)) for p in PROPORTIONS})
    return out


def _render(traits: dict[str, Any], extra: dict[str, Any], width: int, height: int) -> np.ndarray:
    from unison_stream.data.synth.config import WorldConfig
    from unison_stream.data.synth.face import FaceRenderer, FaceState

    fields: dict[str, Any] = {TRAITS[t][0]: int(traits[t]) for t in TRAITS}
    fields.update({p: float(traits[p]) for p in PROPORTIONS})
    ident = _identity_module().Identity(**fields, **extra)
    r = FaceRenderer(
        ident, width=width, height=height, supersample=WorldConfig().supersample, props=[]
    )
    return r.render(FaceState(), draw_hands=False).astype(np.float32)


def _pair(trait: str) -> tuple[int, int]:
    """The two palette entries of colour slot ``trait`` whose least different channel differs
    most: the recolouring divides by that difference, so a larger one rounds less."""
    pal = [np.array(e[1], np.float32) for e in _palette(trait)]
    pairs = [(i, j) for i in range(len(pal)) for j in range(i + 1, len(pal))]
    return max(pairs, key=lambda p: float(np.abs(pal[p[0]] - pal[p[1]]).min()))


def draw(
    traits: dict[str, Any],
    *,
    colours: dict[str, RGB],
    accessories: tuple[str, ...] = (),
    width: int,
    height: int,
) -> np.ndarray:
    """A neutral portrait ``(height, width, 3)`` uint8: ``traits`` (indices keyed as
    :data:`TRAITS`, plus :data:`PROPORTIONS`), free ``colours`` per colour slot (RGB), and the
    world's ``accessories``. The caller checks names against :func:`options`."""
    opts = options()
    fields = {f.name for f in dataclasses.fields(_identity_module().Identity)}
    extra: dict[str, Any] = {}
    if accessories:
        extra["accessories"] = tuple(accessories)
    native = {s: c for s, c in colours.items() if s in opts["free_colours"]}
    extra.update({f"{TRAITS[s][0]}_rgb": c for s, c in native.items()})
    extra = {k: v for k, v in extra.items() if k in fields}
    recolour = {s: c for s, c in colours.items() if s not in native}
    pairs = {s: _pair(s) for s in recolour}
    traits = {**traits, **{s: i for s, (i, _) in pairs.items()}}
    base = _render(traits, extra, width, height)  # (H, W, 3)
    out = base.copy()
    for slot, colour in recolour.items():
        i, j = pairs[slot]
        here, there = (np.array(palette_colour(slot, k), np.float32) for k in (i, j))
        alt = _render({**traits, slot: j}, extra, width, height)
        weight = (base - alt) / (here - there)  # (H, W, 3): how much of the slot each pixel is
        out += weight * (np.array(colour, np.float32) - here)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
