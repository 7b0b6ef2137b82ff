"""``AvatarStore``: per-key avatars on a directory that survive a new instance, limits per key,
unguessable ids, another key's avatars invisible (``docs/avatars.md``, "The store")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unison_stream.avatars import (
    AvatarLimitError,
    AvatarNotFoundError,
    AvatarStore,
    StoreLimits,
    from_design,
    from_identity,
)


def test_store_survives_a_new_instance_and_caches_the_reference(tmp_path: Path) -> None:
    calls: list[int] = []

    def encoder(picture: np.ndarray) -> np.ndarray:
        calls.append(1)
        return picture.mean(axis=(0, 1)).astype(np.float32)  # (3,) stands in for a latent

    store = AvatarStore(tmp_path, encoder=encoder)
    a = from_design({"seed": 2, "skin": "#9fc5e8"})
    made = store.create("key-1", a)
    assert made.id.startswith("av_") and len(made.id) == 25 and calls == [1]
    again = AvatarStore(tmp_path)  # another process, or another replica on the shared folder
    got = again.get("key-1", made.id)
    assert np.array_equal(got.avatar.picture, a.picture) and got.avatar.meta() == a.meta()
    assert got.reference is not None and np.allclose(got.reference, a.picture.mean(axis=(0, 1)))
    assert [r["id"] for r in again.list("key-1")] == [made.id]
    assert again.preview("key-1", made.id).startswith(b"\x89PNG")
    assert not any(p.name.startswith(".tmp") for p in next(tmp_path.iterdir()).iterdir())
    again.delete("key-1", made.id)
    with pytest.raises(AvatarNotFoundError):
        store.get("key-1", made.id)
    assert store.list("key-1") == []


def test_keys_are_apart_and_ids_are_checked(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    made = store.create("alice", from_identity(1))
    with pytest.raises(AvatarNotFoundError) as e:
        store.get("bob", made.id)
    assert e.value.status == 404
    with pytest.raises(AvatarNotFoundError):
        store.delete("bob", made.id)
    with pytest.raises(AvatarNotFoundError, match="ids look like"):
        store.get("alice", "../../etc/passwd")
    assert store.list("bob") == [] and len(store.list("alice")) == 1
    assert "alice" not in " ".join(p.name for p in tmp_path.iterdir())  # keys are not kept
    ids = {store.create("carol", from_identity(k)).id for k in range(5)}
    assert len(ids) == 5


def test_limits_per_key(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path, limits=StoreLimits(max_avatars=2))
    store.create("k", from_identity(1))
    second = store.create("k", from_identity(2))
    with pytest.raises(AvatarLimitError, match="delete one") as e:
        store.create("k", from_identity(3))
    assert e.value.status == 409
    store.create("other", from_identity(3))  # another key has its own limit
    store.delete("k", second.id)
    store.create("k", from_identity(3))
    tight = AvatarStore(tmp_path / "b", limits=StoreLimits(max_bytes=20_000))
    with pytest.raises(AvatarLimitError, match="MiB"):
        for k in range(10):
            tight.create("k", from_identity(k))
    assert 0 < tight.usage("k")["bytes"] <= 20_000
