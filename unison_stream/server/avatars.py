"""The server's avatars: the store of each API key's avatars and the one place a session's
person is resolved, whichever way the request names it (docs/avatars.md, docs/protocol.md).

:meth:`AvatarService.resolve` turns a ``POST /v1/sessions`` body into one
:class:`~unison_stream.avatars.Avatar` — a world ``identity``, a stored ``avatar`` id or an
inline ``picture`` — plus the encoded reference the store cached for it (or None), and that
value is what the session manager hands the engine: no path of its own for any source. The
store lives in ``server.avatar_dir`` (a temporary folder when unset), which Ray Serve replicas
share; it caches the engine's encoded reference under the engine's ``reference_key``.

Decoding, the face check, drawing a design and encoding are CPU work of tens of milliseconds:
each runs in the default executor, never on the event loop. An
:class:`~unison_stream.avatars.AvatarError` becomes :class:`~.errors.Refused` with its own
4xx status and message.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from unison_stream.avatars import (
    Avatar,
    AvatarError,
    AvatarStore,
    StoredAvatar,
    StoreLimits,
    from_design,
    from_identity,
    from_upload,
    world,
)
from unison_stream.server import protocol as P
from unison_stream.server.config import ServerConfig
from unison_stream.server.engine_api import EngineLike
from unison_stream.server.errors import Refused

__all__ = ["AvatarService"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class AvatarService:
    """Avatars per API key on ``cfg.avatar_dir``, made at the media size ``width × height``."""

    def __init__(self, cfg: ServerConfig, engine: EngineLike, *, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._temporary = not cfg.avatar_dir
        root = cfg.avatar_dir or tempfile.mkdtemp(prefix="unison-avatars-")
        if self._temporary:
            log.info("avatars kept in %s until the server stops (set server.avatar_dir)", root)
        self.store = AvatarStore(
            root,
            limits=StoreLimits(cfg.avatar_max_per_key, cfg.avatar_max_bytes_per_key),
            encoder=engine.encode_reference,
            encoder_key=engine.reference_key,
        )

    def close(self) -> None:
        """Remove a temporary store (a configured folder is kept); idempotent."""
        if self._temporary:
            shutil.rmtree(self.store.root, ignore_errors=True)

    # ---- a session's person ------------------------------------------------------------------
    async def resolve(self, api_key: str, req: P.CreateSession) -> tuple[Avatar, np.ndarray | None]:
        """The avatar ``req`` names and its cached encoded reference (None: not cached)."""
        w, h = self.width, self.height
        if req.avatar is not None:
            stored = await _off_loop(self.store.get, api_key, req.avatar)
            return stored.avatar, stored.reference
        if req.picture is not None:
            return await _off_loop(from_upload, req.picture, width=w, height=h), None
        return await _off_loop(from_identity, req.identity, width=w, height=h), None

    # ---- the resource ----------------------------------------------------------------------
    async def create(self, api_key: str, req: P.CreateAvatar) -> P.AvatarInfo:
        """Make the avatar ``req`` describes and store it for ``api_key``."""
        avatar = await self.make(req)
        stored = await _off_loop(self.store.create, api_key, avatar)
        log.info("avatar %s created (%s, %d bytes)", stored.id, avatar.source, stored.bytes)
        return _info(stored.id, {**avatar.meta(), "created": stored.created, "bytes": stored.bytes})

    async def make(self, req: P.CreateAvatar) -> Avatar:
        """The avatar of a picture or a design, not stored (the designer's preview)."""
        w, h = self.width, self.height
        if req.design is not None:
            return await _off_loop(from_design, req.design, width=w, height=h)
        assert req.picture is not None
        return await _off_loop(from_upload, req.picture, caption=req.caption, width=w, height=h)

    def traits(self) -> dict[str, Any]:
        """What a design may name: each trait's choices, the colour slots (which also take
        ``#rrggbb``) and the accessories."""
        opts = world.options()
        return {
            "traits": {t: list(opts[t]) for t in world.TRAITS},
            "colour_slots": list(world.COLOUR_SLOTS),
            "accessories": list(opts["accessories"]),
        }

    async def get(self, api_key: str, avatar_id: str) -> P.AvatarInfo:
        s: StoredAvatar = await _off_loop(self.store.get, api_key, avatar_id)
        return _info(s.id, {**s.avatar.meta(), "created": s.created, "bytes": s.bytes})

    async def preview(self, api_key: str, avatar_id: str) -> bytes:
        return await _off_loop(self.store.preview, api_key, avatar_id)

    async def delete(self, api_key: str, avatar_id: str) -> None:
        await _off_loop(self.store.delete, api_key, avatar_id)
        log.info("avatar %s deleted", avatar_id)

    async def list(self, api_key: str) -> P.AvatarList:
        rows = await _off_loop(self.store.list, api_key)
        lim = self.store.limits
        infos = [_info(str(r["id"]), r) for r in rows]
        used = sum(i.bytes for i in infos)
        return P.AvatarList(infos, len(infos), used, lim.max_avatars, lim.max_bytes)


def _info(avatar_id: str, meta: dict[str, Any]) -> P.AvatarInfo:
    return P.AvatarInfo(
        id=avatar_id,
        preview_url=P.avatar_preview_path(avatar_id),
        source=str(meta["source"]),
        caption=str(meta["caption"]),
        seed=int(meta["seed"]),
        created=float(meta["created"]),
        bytes=int(meta["bytes"]),
        width=int(meta["width"]),
        height=int(meta["height"]),
        provenance=dict(meta.get("provenance") or {}),
    )


async def _off_loop(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``fn(*args, **kw)`` in the default executor; an AvatarError becomes its 4xx."""

    def call() -> T:
        return fn(*args, **kw)

    try:
        return await asyncio.get_running_loop().run_in_executor(None, call)
    except AvatarError as e:
        raise Refused(str(e), status=e.status) from e
