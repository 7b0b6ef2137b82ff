"""The avatar resource on the wire: its paths, request bodies and the record the server answers
with (docs/protocol.md, "Avatars"; docs/avatars.md).

::

    POST   /v1/avatars                 a picture (raw image body, multipart field ``picture``,
                                       or JSON ``{"picture": base64}``) or a JSON design
                                       (``{"design": {...}}``) → 201 + AvatarInfo
    POST   /v1/avatars/preview         a JSON design → image/png (drawn, not stored)
    GET    /v1/avatars/traits          → {"traits": {name: [choice…]}, "colour_slots": [...],
                                          "accessories": [...]} (what a design may name)
    GET    /v1/avatars                 → {"avatars": [AvatarInfo…], "usage": {...}}
    GET    /v1/avatars/{id}            → AvatarInfo
    GET    /v1/avatars/{id}/preview.png  the stored preview
    DELETE /v1/avatars/{id}            → {"id", "deleted": true}

What a picture or a design must be is checked by the server (``unison_stream.avatars``); this
module checks only the shape of a body: one of ``picture``/``design``, base64 that decodes,
sizes within :class:`~.messages.Limits`. Sans-I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from unison_sdk.protocol.messages import Limits, PayloadTooLarge, ProtocolError

__all__ = [
    "AVATARS_PATH",
    "AVATAR_PREVIEW_PATH",
    "AVATAR_TRAITS_PATH",
    "PICTURE_FIELD",
    "PICTURE_TYPES",
    "AvatarInfo",
    "AvatarList",
    "CreateAvatar",
    "avatar_path",
    "avatar_preview_path",
    "decode_picture",
    "parse_create_avatar",
    "picture_body_limit",
]

AVATARS_PATH = "/v1/avatars"
AVATAR_PREVIEW_PATH = "/v1/avatars/preview"  # a design drawn, not stored (the page's designer)
AVATAR_TRAITS_PATH = "/v1/avatars/traits"  # the names a design may use
PICTURE_FIELD = "picture"  # the multipart field, and the JSON key, of an uploaded picture
PICTURE_TYPES = ("image/png", "image/jpeg", "image/webp")  # raw bodies; sniffed all the same
MAX_DESIGN_BYTES = 16384  # a design's JSON: a dozen short keys


def avatar_path(avatar_id: str) -> str:
    return f"{AVATARS_PATH}/{avatar_id}"


def avatar_preview_path(avatar_id: str) -> str:
    return f"{AVATARS_PATH}/{avatar_id}/preview.png"


def picture_body_limit(limits: Limits) -> int:
    """The most bytes a body carrying one picture may have: the picture as base64 plus room for
    the rest of a JSON body (a multipart or raw body is smaller)."""
    return 4 * (limits.max_picture_bytes // 3 + 1) + limits.max_message_bytes


def decode_picture(text: object, limits: Limits, *, key: str = PICTURE_FIELD) -> bytes:
    """A base64 picture (standard or URL-safe alphabet, ``data:`` URL prefix allowed) → bytes;
    ProtocolError when it is not base64, PayloadTooLarge over ``limits.max_picture_bytes``."""
    if not isinstance(text, str) or not text:
        raise ProtocolError(f"'{key}' must be a base64 string of a PNG, JPEG or WebP image")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > 4 * (limits.max_picture_bytes // 3 + 1):
        raise PayloadTooLarge(
            f"'{key}' is over {limits.max_picture_bytes / 2**20:.0f} MiB; send a smaller image"
        )
    try:
        raw = text.strip().replace("-", "+").replace("_", "/")
        data = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ProtocolError(f"'{key}' is not valid base64: {e}") from e
    if not data:
        raise ProtocolError(f"'{key}' is empty")
    return data


@dataclass(frozen=True)
class CreateAvatar:
    """A ``POST /v1/avatars`` request: exactly one of ``picture`` and ``design``."""

    picture: bytes | None = None
    design: dict[str, Any] | None = None
    caption: str = ""  # a picture's caption (a design carries its own)

    def wire(self) -> dict[str, Any]:
        """The JSON body (a picture as base64)."""
        if self.design is not None:
            return {"design": self.design}
        assert self.picture is not None, "an avatar is made from a picture or a design"
        body: dict[str, Any] = {PICTURE_FIELD: base64.b64encode(self.picture).decode()}
        if self.caption:
            body["caption"] = self.caption
        return body


def parse_create_avatar(body: bytes, limits: Limits) -> CreateAvatar:
    """A JSON body of ``POST /v1/avatars`` (or of the design preview) → :class:`CreateAvatar`."""
    if len(body) > picture_body_limit(limits):
        raise PayloadTooLarge("request body too large")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ProtocolError(f"malformed JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ProtocolError('the body must be a JSON object: {"design": {...}} or {"picture": …}')
    unknown = sorted(set(obj) - {PICTURE_FIELD, "design", "caption"})
    if unknown:
        raise ProtocolError(f"unknown field(s): {', '.join(unknown)}")
    if (PICTURE_FIELD in obj) == ("design" in obj):
        raise ProtocolError(f"give exactly one of '{PICTURE_FIELD}' (base64) and 'design'")
    caption = obj.get("caption", "")
    if not isinstance(caption, str) or len(caption) > limits.max_caption_chars:
        raise ProtocolError(
            f"'caption' must be a string of ≤ {limits.max_caption_chars} characters"
        )
    if "design" in obj:
        design = obj["design"]
        if not isinstance(design, dict):
            raise ProtocolError("'design' must be a JSON object of traits")
        if len(body) > MAX_DESIGN_BYTES:
            raise PayloadTooLarge(f"a design body is at most {MAX_DESIGN_BYTES} bytes")
        if caption:
            design = {**design, "caption": caption}
        return CreateAvatar(design=design)
    return CreateAvatar(picture=decode_picture(obj[PICTURE_FIELD], limits), caption=caption)


@dataclass(frozen=True)
class AvatarInfo:
    """What the server tells of one stored avatar (no picture: fetch ``preview_url``)."""

    id: str
    preview_url: str  # a path on the server: GET it with the same API key
    source: str  # "upload" | "design" | "identity"
    caption: str
    seed: int
    created: float  # unix seconds
    bytes: int  # on the server's disk
    width: int
    height: int
    provenance: dict[str, Any] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "preview_url": self.preview_url,
            "source": self.source,
            "caption": self.caption,
            "seed": self.seed,
            "created": self.created,
            "bytes": self.bytes,
            "width": self.width,
            "height": self.height,
            "provenance": self.provenance,
        }

    @classmethod
    def from_wire(cls, o: dict[str, Any]) -> AvatarInfo:
        return cls(
            id=str(o["id"]),
            preview_url=str(o["preview_url"]),
            source=str(o["source"]),
            caption=str(o["caption"]),
            seed=int(o["seed"]),
            created=float(o["created"]),
            bytes=int(o["bytes"]),
            width=int(o["width"]),
            height=int(o["height"]),
            provenance=dict(o.get("provenance") or {}),
        )


@dataclass(frozen=True)
class AvatarList:
    """``GET /v1/avatars``: the key's avatars, oldest first, and how much of its limits they
    use."""

    avatars: list[AvatarInfo]
    used: int  # avatars held
    used_bytes: int
    max_avatars: int
    max_bytes: int

    def wire(self) -> dict[str, Any]:
        return {
            "avatars": [a.wire() for a in self.avatars],
            "usage": {
                "avatars": self.used,
                "bytes": self.used_bytes,
                "max_avatars": self.max_avatars,
                "max_bytes": self.max_bytes,
            },
        }

    @classmethod
    def from_wire(cls, o: dict[str, Any]) -> AvatarList:
        u = o["usage"]
        return cls(
            [AvatarInfo.from_wire(a) for a in o["avatars"]],
            int(u["avatars"]),
            int(u["bytes"]),
            int(u["max_avatars"]),
            int(u["max_bytes"]),
        )
