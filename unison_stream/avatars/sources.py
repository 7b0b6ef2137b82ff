"""The three sources of an :class:`~.avatar.Avatar` (``docs/avatars.md``, "Sources").

* :func:`from_upload`: an uploaded PNG, JPEG or WebP: decoded (:mod:`.image`), its one face
  found and the picture brought to the framing (:mod:`.framing`);
* :func:`from_design`: a character design drawn by the world's renderer (:mod:`.design`,
  :mod:`.world`); drawn at the framing, so no face check is needed;
* :func:`from_identity`: world identity ``n``, the portrait the engine draws for
  ``open_session(identity=n)``.

Each takes the model's picture size (``MediaConfig`` width and height) and raises an
:class:`~.errors.AvatarError` subclass for bad input.
"""

from __future__ import annotations

import hashlib
from typing import Any

from unison_stream.avatars import world
from unison_stream.avatars.avatar import DEFAULT_CAPTION, Avatar
from unison_stream.avatars.design import parse_design
from unison_stream.avatars.errors import DesignError
from unison_stream.avatars.framing import normalise
from unison_stream.avatars.image import decode_image
from unison_stream.config import MediaConfig

__all__ = ["from_design", "from_identity", "from_upload"]

_MEDIA = MediaConfig()


def from_upload(
    data: bytes,
    *,
    caption: str = "",
    seed: int = 0,
    width: int = _MEDIA.width,
    height: int = _MEDIA.height,
) -> Avatar:
    """An avatar from an uploaded image's bytes."""
    picture, framing = normalise(decode_image(data), width=width, height=height)
    provenance = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "face_box": [round(v, 1) for v in framing.face.box],
        "scale": round(framing.scale, 4),
        "padded": round(framing.padded, 3),
    }
    return Avatar(picture, caption or DEFAULT_CAPTION, seed, "upload", provenance)


def from_design(
    spec: dict[str, Any], *, width: int = _MEDIA.width, height: int = _MEDIA.height
) -> Avatar:
    """An avatar drawn from a character design (JSON, :mod:`.design`)."""
    d = parse_design(spec)
    picture = world.draw(
        d.traits,
        colours=d.colours,
        accessories=d.accessories,
        accessory_colour=d.accessory_colour,
        width=width,
        height=height,
    )
    return Avatar(picture, d.caption or d.describe(), d.seed, "design", {"design": d.to_json()})


def from_identity(
    number: int, *, caption: str = "", width: int = _MEDIA.width, height: int = _MEDIA.height
) -> Avatar:
    """World identity ``number``'s portrait, as the engine draws it for that identity."""
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise DesignError(f"identity must be a whole number ≥ 0, not {number!r}")
    d = parse_design({"seed": number})
    picture = world.draw(d.traits, colours={}, width=width, height=height)
    return Avatar(picture, caption or DEFAULT_CAPTION, number, "identity", {"identity": number})
