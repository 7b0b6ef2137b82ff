"""The errors of custom avatars, each meant to become one HTTP 4xx answer (``docs/avatars.md``).

    AvatarError                 base; ``status`` is the HTTP status a server answers with
    ├── InvalidImageError       the upload cannot be used as a picture (400)
    │   ├── NotAnImageError     not PNG, JPEG or WebP (415)
    │   ├── ImageTooLargeError  over the byte or pixel limit (413)
    │   └── CorruptImageError   a known format that does not decode (400)
    ├── FramingError            no usable face: none, several, turned, too small, cut off (422)
    ├── DesignError             a character design breaks a rule (422)
    │   ├── UnknownTraitError   a trait, a trait's value or an accessory the world lacks
    │   └── BadColourError      not ``#rgb`` / ``#rrggbb``, or a colour the model reserves
    ├── AvatarNotFoundError     no avatar with that id for this key (404)
    └── AvatarLimitError        the key's count or byte limit is reached (409)

Every message says what was wrong and how to fix it. All are ``ValueError`` so a caller that
already treats bad input as such keeps working. Torch-free.
"""

from __future__ import annotations

__all__ = [
    "AvatarError",
    "AvatarLimitError",
    "AvatarNotFoundError",
    "BadColourError",
    "CorruptImageError",
    "DesignError",
    "FramingError",
    "ImageTooLargeError",
    "InvalidImageError",
    "NotAnImageError",
    "UnknownTraitError",
]


class AvatarError(ValueError):
    """A request about an avatar cannot be served as asked; ``status`` is its HTTP status."""

    status = 400


class InvalidImageError(AvatarError):
    """The uploaded bytes cannot be used as a picture."""


class NotAnImageError(InvalidImageError):
    """The bytes are not a PNG, JPEG or WebP image."""

    status = 415


class ImageTooLargeError(InvalidImageError):
    """The upload is over the byte limit, or its pixel size is over the pixel limit."""

    status = 413


class CorruptImageError(InvalidImageError):
    """The bytes start like a known format but do not decode."""


class FramingError(AvatarError):
    """The picture has no usable face under the framing rule."""

    status = 422


class DesignError(AvatarError):
    """A character design breaks a rule."""

    status = 422


class UnknownTraitError(DesignError):
    """A trait, a trait value or an accessory that the synthetic world does not draw."""


class BadColourError(DesignError):
    """A colour that is not ``#rgb`` / ``#rrggbb``, or one the model keeps for itself."""


class AvatarNotFoundError(AvatarError):
    """No avatar with that id belongs to this key (another key's avatars read as absent)."""

    status = 404


class AvatarLimitError(AvatarError):
    """The key already holds as many avatars, or as many bytes, as its limit allows."""

    status = 409
