"""``AvatarStore``: avatars per API key on a directory, shared by every replica that mounts it
(``docs/avatars.md``, "The store").

Layout (no database server; the directory is the store)::

    <root>/<sha256(key)[:32]>/            one folder per API key (the key itself is not kept)
        .lock                             flock'ed while the key's avatars are created/deleted
        av_<22 random url-safe chars>/    one avatar
            picture.png                   the normalised picture (what a session is opened on)
            preview.png                   the picture 2× larger, for pages and lists
            reference.npy                 the encoded reference, when an encoder was given
            avatar.json                   caption, seed, source, provenance, sizes; written last

**Atomic writes.** An avatar is written whole into a hidden temporary folder beside the
others and renamed into place (one ``rename``: readers see all of it or nothing); a delete
renames it out of sight first, then removes it. **Limits** per key (count, bytes) are checked
under the key's ``flock``, so two processes on one host cannot both take the last slot;
on a network file system without working ``flock`` the limit may be overshot by a few.
**Ids** are 128 random bits; an id of another key reads as absent (404), never as forbidden.
The encoded reference is whatever ``encoder`` returns for the picture (for the engine: its
video codec's latent of the picture held still; None where it has no codec); it is computed
once, at creation, and kept with ``encoder_key`` (the engine's name for its codec and media
size): a store read by an engine of another key returns no reference, and the engine encodes
the picture itself.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unison_stream.avatars.avatar import Avatar
from unison_stream.avatars.errors import AvatarLimitError, AvatarNotFoundError

__all__ = ["AvatarStore", "StoreLimits", "StoredAvatar"]

_ID = re.compile(r"^av_[A-Za-z0-9_-]{22}$")
PICTURE, PREVIEW, REFERENCE, META = "picture.png", "preview.png", "reference.npy", "avatar.json"


@dataclass(frozen=True)
class StoreLimits:
    """What one API key may hold."""

    max_avatars: int = 20
    max_bytes: int = 8 * 1024 * 1024  # a 128 px avatar with its preview is ~40–80 kB


@dataclass(frozen=True)
class StoredAvatar:
    """An avatar as the store holds it."""

    id: str
    avatar: Avatar
    created: float  # unix seconds
    bytes: int  # on disk, every file
    reference: np.ndarray | None = None  # the encoded reference, when one was cached


class AvatarStore:
    """Create, get, delete and list avatars per API key, under ``root``."""

    def __init__(
        self,
        root: Path | str,
        *,
        limits: StoreLimits | None = None,
        encoder: Callable[[np.ndarray], np.ndarray | None] | None = None,
        encoder_key: str = "",
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.limits = limits or StoreLimits()
        self.encoder = encoder  # picture (H, W, 3) uint8 → the reference to cache (or None)
        self.encoder_key = encoder_key  # a cached reference is used only by the same key

    # ---- paths ------------------------------------------------------------------------------
    def _key_dir(self, api_key: str) -> Path:
        d = self.root / hashlib.sha256(api_key.encode()).hexdigest()[:32]
        d.mkdir(exist_ok=True)
        return d

    def _dir(self, api_key: str, avatar_id: str) -> Path:
        if not _ID.match(avatar_id):
            raise AvatarNotFoundError(f"no avatar {avatar_id!r}: ids look like av_ + 22 characters")
        d = self._key_dir(api_key) / avatar_id
        if not (d / META).is_file():
            raise AvatarNotFoundError(
                f"no avatar {avatar_id!r} for this key (list them to see ids)"
            )
        return d

    @contextmanager
    def _locked(self, api_key: str) -> Iterator[Path]:
        d = self._key_dir(api_key)
        with open(d / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- the API ----------------------------------------------------------------------------
    def create(self, api_key: str, avatar: Avatar) -> StoredAvatar:
        """Store ``avatar`` for ``api_key``; AvatarLimitError when the key's limit is reached."""
        files: dict[str, bytes] = {PICTURE: avatar.png(), PREVIEW: avatar.preview_png()}
        reference = None if self.encoder is None else self.encoder(avatar.picture)
        created = time.time()
        meta = {**avatar.meta(), "created": created}
        if reference is not None:
            reference = np.asarray(reference)
            files[REFERENCE] = _npy(reference)
            meta["reference_key"] = self.encoder_key
        size = sum(len(b) for b in files.values()) + len(json.dumps(meta)) + 64
        meta["bytes"] = size
        with self._locked(api_key) as kd:
            held = _records(kd)
            lim = self.limits
            if len(held) >= lim.max_avatars:
                raise AvatarLimitError(
                    f"this key holds {len(held)} avatars, its limit; delete one to add another"
                )
            used = sum(int(m.get("bytes", 0)) for _, m in held)
            if used + size > lim.max_bytes:
                raise AvatarLimitError(
                    f"this key's avatars use {used / 2**20:.2f} MiB of {lim.max_bytes / 2**20:.2f} "
                    "MiB; delete one to add another"
                )
            avatar_id = "av_" + secrets.token_urlsafe(16)
            tmp = kd / f".tmp-{secrets.token_hex(8)}"
            tmp.mkdir()
            try:
                for name, data in files.items():
                    _write(tmp / name, data)
                _write(tmp / META, json.dumps(meta, indent=1).encode())  # last: the marker
                os.rename(tmp, kd / avatar_id)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return StoredAvatar(avatar_id, avatar, created, size, reference)

    def get(self, api_key: str, avatar_id: str) -> StoredAvatar:
        """The avatar ``avatar_id`` of ``api_key``; AvatarNotFoundError when it has none."""
        d = self._dir(api_key, avatar_id)
        try:
            meta = json.loads((d / META).read_text())
            avatar = Avatar.from_stored((d / PICTURE).read_bytes(), meta)
            same = meta.get("reference_key", "") == self.encoder_key
            ref = np.load(d / REFERENCE) if same and (d / REFERENCE).is_file() else None
        except FileNotFoundError as e:  # deleted by another replica meanwhile
            raise AvatarNotFoundError(f"no avatar {avatar_id!r} for this key") from e
        return StoredAvatar(avatar_id, avatar, float(meta["created"]), int(meta["bytes"]), ref)

    def preview(self, api_key: str, avatar_id: str) -> bytes:
        """The stored preview PNG."""
        return (self._dir(api_key, avatar_id) / PREVIEW).read_bytes()

    def delete(self, api_key: str, avatar_id: str) -> None:
        """Remove the avatar; AvatarNotFoundError when the key has none by that id."""
        with self._locked(api_key) as kd:
            d = self._dir(api_key, avatar_id)
            trash = kd / f".trash-{secrets.token_hex(8)}"
            os.rename(d, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def list(self, api_key: str) -> builtins.list[dict[str, Any]]:
        """Every avatar of ``api_key`` as ``{"id", "caption", "source", "created", "bytes",
        …}``, oldest first (no pictures: fetch one with :meth:`get` or :meth:`preview`)."""
        return [{"id": i, **m} for i, m in _records(self._key_dir(api_key))]

    def usage(self, api_key: str) -> dict[str, int]:
        """How much of its limits ``api_key`` uses."""
        held = _records(self._key_dir(api_key))
        return {"avatars": len(held), "bytes": sum(int(m.get("bytes", 0)) for _, m in held)}


def _records(key_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in key_dir.iterdir():
        if not _ID.match(d.name):
            continue
        try:
            out.append((d.name, json.loads((d / META).read_text())))
        except (FileNotFoundError, json.JSONDecodeError):
            continue  # being deleted
    return sorted(out, key=lambda r: float(r[1].get("created", 0)))


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` and flush it to disk (the folder is renamed into place after)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
