"""A character design: the synthetic world's traits by name, free colours, accessories
(``docs/avatars.md``, "Sources").

A design is JSON, every key optional::

    {"face": "oval", "skin": "#6ab04c", "hair": "bob", "hair_color": "pink",
     "eyes": "blue", "clothes": "hoodie", "clothes_color": "#123456",
     "background": "plain", "background_color": "cream", "accessories": ["glasses", "hat"],
     "accessory_color": "#2d2d34", "eye_spacing": 0.43, "mouth_width": 0.42, "seed": 7,
     "caption": "…"}

Traits left out come from world identity ``seed`` (so ``{"seed": 7}`` is identity 7). A
colour trait (``skin``, ``hair_color``, ``eyes``, ``clothes_color``, ``background_color``)
takes a palette name or a hex colour; skin may not come near the colour the model paints
inside an open mouth (the lip-sync measure and the model's own mouth read that colour).
Accessories are those the world's renderer draws (:func:`~.world.options`: glasses round or
square, a hat or headband, earrings; one of each kind), in one ``accessory_color`` (hex; kept,
like every free colour but skin, clear of the mouth's colour). Parsing does no
drawing; :class:`Design` is checked and ready for :func:`~.world.draw`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unison_stream.avatars import world
from unison_stream.avatars.errors import BadColourError, DesignError, UnknownTraitError

__all__ = ["Design", "colour_name", "parse_design", "parse_hex"]

RGB = tuple[int, int, int]
_HEX = re.compile(r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
MOUTH_MARGIN = 80.0  # RGB distance a free colour keeps from the mouth's inside colour
KEYS = (*world.TRAITS, "accessories", "accessory_color", *world.PROPORTIONS, "seed", "caption")
# basic colour words for captions (the caption embedding reads words, not hex)
_WORDS: tuple[tuple[str, RGB], ...] = (
    ("black", (20, 20, 20)),
    ("white", (240, 240, 240)),
    ("grey", (128, 128, 128)),
    ("red", (200, 40, 40)),
    ("orange", (240, 140, 40)),
    ("yellow", (235, 215, 60)),
    ("green", (60, 160, 70)),
    ("teal", (40, 150, 150)),
    ("blue", (50, 90, 200)),
    ("purple", (130, 70, 170)),
    ("pink", (235, 130, 180)),
    ("brown", (120, 75, 40)),
    ("beige", (225, 200, 165)),
)


def parse_hex(value: str, *, trait: str) -> RGB:
    """``#rgb`` or ``#rrggbb`` → RGB; BadColourError otherwise."""
    m = _HEX.match(value.strip())
    if m is None:
        raise BadColourError(
            f"{trait}: {value!r} is neither a palette name nor a hex colour; write it as "
            "#rrggbb (e.g. #6ab04c) or #rgb"
        )
    h = m.group(1)
    h = "".join(c * 2 for c in h) if len(h) == 3 else h
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def colour_name(rgb: RGB) -> str:
    """The nearest basic colour word (for a caption)."""
    c = np.array(rgb, np.float32)
    return min(_WORDS, key=lambda w: float(np.linalg.norm(c - np.array(w[1]))))[0]


@dataclass(frozen=True)
class Design:
    """A checked design: trait indices, free colours, accessories, seed and caption."""

    traits: dict[str, Any]  # indices keyed as world.TRAITS, plus world.PROPORTIONS
    colours: dict[str, RGB] = field(default_factory=dict)  # free colour per colour slot
    accessories: tuple[str, ...] = ()
    seed: int = 0
    caption: str = ""
    accessory_colour: RGB = world.DEFAULT_ACCESSORY_COLOUR

    def names(self) -> dict[str, str]:
        """Each trait's name; a free colour as its nearest basic colour word."""
        opts = world.options()
        out = {t: opts[t][int(self.traits[t])] for t in world.TRAITS}
        out.update({t: colour_name(c) for t, c in self.colours.items()})
        return out

    def describe(self) -> str:
        """A caption in the world's manner, for a design given none."""
        n = self.names()
        hair = "a bald head" if n["hair"] == "bald" else f"{n['hair_color']} {n['hair']} hair"
        worn = [a if a.endswith("s") else f"a {a}" for a in self.accessories]
        listed = ", ".join(worn[:-1]) + f" and {worn[-1]}" if len(worn) > 1 else "".join(worn)
        extra = f" and {listed}" if worn else ""
        return (
            f"A person with {hair} and {n['eyes']} eyes{extra}, wearing a {n['clothes_color']} "
            f"{n['clothes']}, in front of a {n['background_color']} {n['background']} "
            "background, talking"
        )

    def to_json(self) -> dict[str, Any]:
        """The design as JSON that :func:`parse_design` reads back to the same design."""
        out: dict[str, Any] = {t: v for t, v in self.names().items() if t not in self.colours}
        out.update({t: "#{:02x}{:02x}{:02x}".format(*c) for t, c in self.colours.items()})
        out.update({p: round(float(self.traits[p]), 4) for p in world.PROPORTIONS})
        out.update(accessories=list(self.accessories), seed=self.seed, caption=self.caption)
        if self.accessories:
            out["accessory_color"] = "#{:02x}{:02x}{:02x}".format(*self.accessory_colour)
        return out


def parse_design(spec: dict[str, Any]) -> Design:
    """Check a design (see the module docstring) against the world's options."""
    if not isinstance(spec, dict):
        raise DesignError('a design is a JSON object of traits, e.g. {"hair": "bob"}')
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise UnknownTraitError(f"unknown design keys {unknown}; the keys are {list(KEYS)}")
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise DesignError(f"seed must be a whole number ≥ 0, not {seed!r}")
    opts = world.options()
    traits = world.identity_traits(seed)
    colours: dict[str, RGB] = {}
    for trait in world.TRAITS:
        if trait not in spec:
            continue
        value = spec[trait]
        if not isinstance(value, str):
            raise DesignError(f"{trait} must be a name (or a hex colour), not {value!r}")
        names = [n.lower() for n in opts[trait]]
        if value.strip().lower() in names:
            traits[trait] = names.index(value.strip().lower())
        elif trait in world.COLOUR_SLOTS and value.strip().startswith("#"):
            colours[trait] = parse_hex(value, trait=trait)
        else:
            hint = " or a hex colour (#rrggbb)" if trait in world.COLOUR_SLOTS else ""
            raise UnknownTraitError(
                f"{trait}: {value!r} is not one the world draws; choose one of "
                f"{', '.join(opts[trait])}{hint}"
            )
    for p in world.PROPORTIONS:
        if p in spec:
            v = spec[p]
            if not isinstance(v, int | float) or not 0.3 <= float(v) <= 0.55:
                raise DesignError(f"{p} must be a number from 0.3 to 0.55, not {v!r}")
            traits[p] = float(v)
    if "skin" in colours:
        gap = float(np.linalg.norm(np.subtract(colours["skin"], world.mouth_colour())))
        if gap < MOUTH_MARGIN:
            raise BadColourError(
                f"skin {spec['skin']!r} is too close to the dark red the model paints inside an "
                "open mouth; choose a lighter or less red skin colour"
            )
    accessories = spec.get("accessories", [])
    if not isinstance(accessories, list) or not all(isinstance(a, str) for a in accessories):
        raise DesignError('accessories must be a list of names, e.g. ["glasses"]')
    missing = [a for a in accessories if a not in opts["accessories"]]
    if missing:
        have = ", ".join(opts["accessories"]) or "none yet"
        raise UnknownTraitError(
            f"accessories {missing} are not drawn by the world's renderer (it draws: {have}); "
            "draw them on a picture and upload it instead"
        )
    kinds = [world.ACCESSORIES[a][0] for a in accessories]
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        raise DesignError(f"accessories: one {' and one '.join(twice)} at most, not {accessories}")
    accessory_colour = world.DEFAULT_ACCESSORY_COLOUR
    if "accessory_color" in spec:
        value = spec["accessory_color"]
        if not isinstance(value, str):
            raise DesignError(f"accessory_color must be a hex colour (#rrggbb), not {value!r}")
        accessory_colour = parse_hex(value, trait="accessory_color")
        if np.linalg.norm(np.subtract(accessory_colour, world.mouth_colour())) < MOUTH_MARGIN:
            raise BadColourError(
                f"accessory_color {value!r} is too close to the dark red the model paints inside "
                "an open mouth; choose another colour"
            )
    caption = spec.get("caption", "")
    if not isinstance(caption, str) or len(caption) > 300:
        raise DesignError("caption must be text of at most 300 characters")
    return Design(traits, colours, tuple(accessories), seed, caption, accessory_colour)
