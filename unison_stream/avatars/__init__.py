"""Custom avatars: a picture at the model's framing as a value, its sources, the framing
rule and its face check, and a store per API key (``docs/avatars.md``). Torch-free."""

from unison_stream.avatars.avatar import DEFAULT_CAPTION, Avatar
from unison_stream.avatars.errors import (
    AvatarError,
    AvatarLimitError,
    AvatarNotFoundError,
    BadColourError,
    CorruptImageError,
    DesignError,
    FramingError,
    ImageTooLargeError,
    InvalidImageError,
    NotAnImageError,
    UnknownTraitError,
)
from unison_stream.avatars.sources import from_design, from_identity, from_upload
from unison_stream.avatars.store import AvatarStore, StoredAvatar, StoreLimits

__all__ = [
    "DEFAULT_CAPTION",
    "Avatar",
    "AvatarError",
    "AvatarLimitError",
    "AvatarNotFoundError",
    "AvatarStore",
    "BadColourError",
    "CorruptImageError",
    "DesignError",
    "FramingError",
    "ImageTooLargeError",
    "InvalidImageError",
    "NotAnImageError",
    "StoreLimits",
    "StoredAvatar",
    "UnknownTraitError",
    "from_design",
    "from_identity",
    "from_upload",
]
