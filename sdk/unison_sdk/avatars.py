"""Your own avatars on a server: upload a picture or a character design once, open sessions on
it by id (docs/sdk.md, "Avatars"; docs/avatars.md).

::

    from unison_sdk import connect, create_avatar, list_avatars, delete_avatar

    me = await create_avatar(URL, "me.jpg", api_key=KEY)            # a path, bytes, a PIL image
    elf = await create_avatar(URL, {"skin": "#6ab04c", "hair": "bob"}, api_key=KEY)  # a design
    async with connect(URL, api_key=KEY, avatar=me.id) as avatar:     # or avatar=me
        ...
    for a in await list_avatars(URL, api_key=KEY):
        await delete_avatar(URL, a.id, api_key=KEY)

Each call is one HTTP request (``urllib``, run in a thread: cancelling the await abandons the
wait, not the request); each has a blocking twin named ``…_sync``. A refusal raises
:class:`~unison_sdk.errors.AvatarRefused` with the server's status (415 not an image, 413 too
large, 422 no face or a bad design, 404 unknown id, 409 the key's limit) and its message.
A PIL image is saved as PNG (the SDK does not need Pillow otherwise).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Any

from unison_sdk._rest import request
from unison_sdk.protocol import (
    AVATAR_PREVIEW_PATH,
    AVATARS_PATH,
    AvatarInfo,
    AvatarList,
    CreateAvatar,
    avatar_path,
    avatar_preview_path,
)

__all__ = [
    "AvatarSource",
    "create_avatar",
    "create_avatar_sync",
    "delete_avatar",
    "delete_avatar_sync",
    "design_preview",
    "get_avatar",
    "list_avatars",
    "list_avatars_sync",
    "picture_bytes",
]

# a file path, image bytes (PNG, JPEG, WebP), a PIL image, or a design (a dict of traits)
AvatarSource = str | os.PathLike[str] | bytes | dict[str, Any] | Any
DEFAULT_TIMEOUT_S = 30.0  # an upload's face check takes a moment on a busy server


def picture_bytes(source: Any) -> bytes:
    """The image bytes of a path, bytes or a PIL image (saved as PNG)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        return Path(source).read_bytes()
    if hasattr(source, "save"):  # a PIL image
        buf = io.BytesIO()
        source.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(
        f"an avatar is a path, image bytes, a PIL image or a design dict, not {type(source)}"
    )


def _request_of(source: AvatarSource, caption: str) -> CreateAvatar:
    if isinstance(source, dict):
        design = {**source, "caption": caption} if caption else source
        return CreateAvatar(design=design)
    return CreateAvatar(picture=picture_bytes(source), caption=caption)


def create_avatar_sync(
    url: str,
    source: AvatarSource,
    *,
    api_key: str,
    caption: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AvatarInfo:
    """Store an avatar made from ``source`` for ``api_key``; blocking."""
    body = json.dumps(_request_of(source, caption).wire()).encode()
    out = request(url, "POST", AVATARS_PATH, api_key=api_key, body=body, timeout=timeout_s)
    return AvatarInfo.from_wire(json.loads(out))


def list_avatars_sync(
    url: str, *, api_key: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[AvatarInfo]:
    """The key's avatars, oldest first; blocking."""
    out = request(url, "GET", AVATARS_PATH, api_key=api_key, timeout=timeout_s)
    return AvatarList.from_wire(json.loads(out)).avatars


def delete_avatar_sync(
    url: str, avatar: str | AvatarInfo, *, api_key: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Delete one of the key's avatars (by id or record); blocking."""
    aid = avatar.id if isinstance(avatar, AvatarInfo) else avatar
    request(url, "DELETE", avatar_path(aid), api_key=api_key, timeout=timeout_s)


async def create_avatar(
    url: str,
    source: AvatarSource,
    *,
    api_key: str,
    caption: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AvatarInfo:
    """Store an avatar made from ``source`` (a path, image bytes, a PIL image, or a design
    dict) for ``api_key`` and return its record (``id``, ``preview_url`` …)."""
    return await asyncio.to_thread(
        create_avatar_sync, url, source, api_key=api_key, caption=caption, timeout_s=timeout_s
    )


async def list_avatars(
    url: str, *, api_key: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[AvatarInfo]:
    """The key's avatars, oldest first."""
    return await asyncio.to_thread(list_avatars_sync, url, api_key=api_key, timeout_s=timeout_s)


async def get_avatar(
    url: str, avatar_id: str, *, api_key: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[AvatarInfo, bytes]:
    """One avatar's record and its preview PNG."""

    def fetch() -> tuple[AvatarInfo, bytes]:
        info = request(url, "GET", avatar_path(avatar_id), api_key=api_key, timeout=timeout_s)
        png = request(
            url, "GET", avatar_preview_path(avatar_id), api_key=api_key, timeout=timeout_s
        )
        return AvatarInfo.from_wire(json.loads(info)), png

    return await asyncio.to_thread(fetch)


async def delete_avatar(
    url: str, avatar: str | AvatarInfo, *, api_key: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Delete one of the key's avatars (by id or record)."""
    await asyncio.to_thread(delete_avatar_sync, url, avatar, api_key=api_key, timeout_s=timeout_s)


async def design_preview(
    url: str, design: dict[str, Any], *, api_key: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> bytes:
    """The PNG a design draws (2× the model's size), not stored: for a designer's preview."""
    body = json.dumps(CreateAvatar(design=design).wire()).encode()
    return await asyncio.to_thread(
        request, url, "POST", AVATAR_PREVIEW_PATH, api_key=api_key, body=body, timeout=timeout_s
    )
