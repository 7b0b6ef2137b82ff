"""``connect()``: open a session and return its :class:`~unison_sdk.client.Avatar`, awaited or
used as ``async with`` (docs/sdk.md)."""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any

from unison_sdk.avatars import picture_bytes
from unison_sdk.client import Avatar
from unison_sdk.protocol import AvatarInfo, CreateSession, Mode

__all__ = ["Connect", "connect"]


class Connect:
    """What :func:`connect` returns: ``await`` it, or use it as ``async with``."""

    def __init__(self, avatar_kw: dict[str, Any]) -> None:
        self._kw = avatar_kw
        self._avatar: Avatar | None = None

    async def _create(self) -> Avatar:
        avatar = Avatar(**self._kw)
        try:
            await avatar._open()
        except BaseException:
            await avatar.close()
            raise
        return avatar

    def __await__(self) -> Generator[Any, None, Avatar]:
        return self._create().__await__()

    async def __aenter__(self) -> Avatar:
        self._avatar = await self._create()
        return self._avatar

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._avatar is not None:
            await self._avatar.close()


def connect(
    url: str,
    *,
    api_key: str | None = None,
    token: str | None = None,
    mode: Mode = "private",
    channel: str | None = None,
    identity: int = 0,
    avatar: str | AvatarInfo | Any | None = None,
    caption: str = "",
    media: bool = True,
    reconnect: bool = True,
    reconnect_timeout_s: float = 15.0,
    timeout_s: float = 10.0,
    failover: bool = True,
    stems: bool = False,
) -> Connect:
    """Open a session on the server at ``url`` (``http://127.0.0.1:8080``).

    ``api_key`` creates a new session (``mode``, ``channel``, ``identity``, ``caption`` go to
    ``POST /v1/sessions``); ``token`` uses one made elsewhere. ``avatar`` is who the session
    shows instead of world ``identity``: a stored avatar (its id, or the record
    :func:`~unison_sdk.avatars.create_avatar` returned), or a picture sent with the request
    (a path, image bytes or a PIL image; checked like an upload, not stored).
    ``media=False`` skips WebRTC (control and events only). ``stems=True`` (private sessions)
    also receives the mix's speech and effects stems: ``audio_frames(stem="speech" | "sfx")``,
    ``record(path, stems=True)`` (docs/stems.md). A dropped websocket is resumed for up to
    ``reconnect_timeout_s`` when ``reconnect``; a session that is gone (its server died, or it
    ended) is replaced by a new one at ``url`` when ``failover`` and an ``api_key`` (the
    utterance in flight ``interrupted``; ``ConnectionEvent("moved")``). Cancelling the connect
    is safe."""
    stored = avatar.id if isinstance(avatar, AvatarInfo) else avatar
    inline = None
    if stored is not None and not isinstance(stored, str):
        inline, stored = picture_bytes(stored), None
    body = CreateSession(
        identity=identity,
        caption=caption,
        mode=mode,
        channel=channel,
        avatar=stored,
        picture=inline,
        stems=stems,
    ).wire()
    return Connect(
        {
            "url": url,
            "api_key": api_key,
            "token": token,
            "session": body,
            "media": media,
            "reconnect": reconnect,
            "reconnect_timeout_s": reconnect_timeout_s,
            "timeout_s": timeout_s,
            "failover": failover,
        }
    )
