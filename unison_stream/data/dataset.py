"""Write the synthetic world to disk: tar shards of clips plus a JSONL manifest, with splits.

Layout of ``OUT/``::

    dataset.json            what was generated (seed, world config, counts, clips/s)
    manifest.jsonl          one row per clip (schema in docs/data.md), in clip order
    shards/shard-00000.tar  WebDataset-style tar; member ``<id>.npz`` holds the arrays
                            frames (F,H,W,3) uint8 and speech, sfx, ambience, mix (S,) float32

A row points at its media with ``"shards/shard-00000.tar::<id>.npz"``; the loader picks the
array by role (video → ``frames``, audio → ``mix``, stem name → that array).

Splits hold out by *content*: an identity's trait key and a sentence's text are each hashed to
a split, and a clip of split ``s`` only draws identities and sentences that hash to ``s``. So
no test identity or test sentence ever appears in training, whatever the seed. Clip ``i`` is
drawn from ``numpy.random.default_rng([seed, i])``, so the output does not depend on how many
worker processes made it; tar headers and zip entries carry fixed timestamps, so equal seeds
give byte-identical files.

Worlds other than the classic one (:meth:`WorldConfig.classic`) take each clip's kind from
its index (:func:`~.synth.states.kind_of`), draw its rests from ``default_rng([seed, 3, i])``
and each pool member's look from
``default_rng([seed, 2, j])``, streams the classic world never touches, so its files stay
the same bytes; their rows also carry ``kind``, ``rest``, ``nods`` and ``smiles``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unison_stream.data.synth.clip import make_clip, sample_spec
from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.identity import (
    Identity,
    identity_key,
    sample_identity,
    sample_look_identity,
)
from unison_stream.data.synth.states import StateDraw, kind_of, sample_state
from unison_stream.data.synth.text import Script, sample_script, sample_sentence

__all__ = ["SPLITS", "SynthReport", "clip_row", "split_of", "synth_dataset"]

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SCHEMA_VERSION = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_MAX_TRIES = 10_000


def split_of(key: str, fractions: tuple[float, float, float]) -> str:
    """The split a content key (identity traits or sentence text) belongs to, by stable hash."""
    u = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, frac in zip(SPLITS, fractions, strict=True):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]


def _identity_pool(seed: int, n: int, cfg: WorldConfig | None = None) -> list[Identity]:
    """``n`` identities; a ``cfg.look_share`` of them with a free look (none by default)."""
    cfg = cfg or WorldConfig()
    pool = []
    for j in range(n):
        look_rng = np.random.default_rng([seed, 2, j])
        if cfg.look_share > 0 and look_rng.random() < cfg.look_share:
            pool.append(
                sample_look_identity(
                    look_rng,
                    unnatural_skin=cfg.look_unnatural_skin,
                    glasses=cfg.look_glasses,
                    headwear=cfg.look_headwear,
                    earrings=cfg.look_earrings,
                )
            )
        else:
            pool.append(sample_identity(np.random.default_rng([seed, 1, j])))
    return pool


def _draw(
    cfg: WorldConfig,
    seed: int,
    index: int,
    pools: dict[str, list[Identity]],
    kind: str = "speech",
) -> tuple[str, Identity, Script, np.random.Generator]:
    """Split, identity and script of clip ``index``: all from ``default_rng([seed, index])``.

    Quiet and listening clips get an empty script (no words, no tags).
    """
    rng = np.random.default_rng([seed, 0, index])
    split = str(rng.choice(np.array(SPLITS), p=np.array(cfg.split_fractions)))
    identity = pools[split][int(rng.integers(len(pools[split])))]
    if kind != "speech":
        return split, identity, Script(words=(), events=()), rng
    for _ in range(_MAX_TRIES):
        words = sample_sentence(rng, cfg.min_words, cfg.max_words)
        script = sample_script(rng, words, cfg.max_events, cfg.event_prob)
        if split_of(script.sentence_key(), cfg.split_fractions) == split:
            return split, identity, script, rng
    raise RuntimeError(f"no sentence of split {split!r} after {_MAX_TRIES} draws")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (zip of ``.npy``) with fixed timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for name, arr in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, npy.getvalue())
    return buf.getvalue()


def clip_row(
    cfg: WorldConfig, seed: int, index: int, pools: dict[str, list[Identity]]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Generate clip ``index``: its manifest row (without media paths) and its arrays."""
    state = StateDraw()
    if not cfg.classic():
        state = sample_state(np.random.default_rng([seed, 3, index]), cfg, kind_of(index, cfg))
    split, identity, script, rng = _draw(cfg, seed, index, pools, state.kind)
    clip_id = f"syn-{seed}-{index:07d}"
    spec = sample_spec(rng, cfg, clip_id=clip_id, identity=identity, script=script)
    spec = replace(spec, state=state)
    clip = make_clip(spec, cfg)
    row: dict[str, Any] = {
        "id": clip_id,
        "split": split,
        "source": "synthetic",
        "fps": cfg.fps,
        "sample_rate": cfg.sample_rate,
        "width": cfg.width,
        "height": cfg.height,
        "num_frames": len(clip.frames),
        "duration": round(len(clip.mix) / cfg.sample_rate, 5),
        "identity_key": identity_key(identity),
        "sentence_key": script.sentence_key(),
        **clip.annotations(),
    }
    if not cfg.classic():
        row.update(clip.state_annotations())
    arrays = {
        "frames": clip.frames,
        "speech": clip.speech,
        "sfx": clip.sfx,
        "ambience": clip.ambience,
        "mix": clip.mix,
    }
    return row, arrays


# ---- worker processes ------------------------------------------------------------------------
_W: dict[str, Any] = {}


def _worker_init(cfg: WorldConfig, seed: int, pools: dict[str, list[Identity]]) -> None:
    _W.update(cfg=cfg, seed=seed, pools=pools)


def _worker_job(index: int) -> tuple[dict[str, Any], bytes]:
    row, arrays = clip_row(_W["cfg"], _W["seed"], index, _W["pools"])
    return row, _npz_bytes(arrays)


def _jobs(
    n: int, cfg: WorldConfig, seed: int, pools: dict[str, list[Identity]], workers: int
) -> Iterator[tuple[dict[str, Any], bytes]]:
    if workers <= 1:
        _worker_init(cfg, seed, pools)
        yield from (_worker_job(i) for i in range(n))
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ctx.Pool(workers, initializer=_worker_init, initargs=(cfg, seed, pools)) as pool:
        yield from pool.imap(_worker_job, range(n), chunksize=1)


class SynthReport(dict[str, Any]):
    """What :func:`synth_dataset` wrote (also saved as ``dataset.json``)."""


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def synth_dataset(
    out: str | Path,
    *,
    n: int,
    seed: int = 0,
    workers: int = 1,
    identities: int = 1000,
    cfg: WorldConfig | None = None,
    progress: bool = True,
) -> SynthReport:
    """Generate ``n`` clips into ``out`` (shards + manifest); returns the report."""
    cfg = cfg or WorldConfig()
    if n < 1:
        raise ValueError("n must be ≥ 1")
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    pool = _identity_pool(seed, identities, cfg)
    pools = {
        s: [i for i in pool if split_of(identity_key(i), cfg.split_fractions) == s] for s in SPLITS
    }
    for s, members in pools.items():
        if not members:
            raise ValueError(f"no identity of split {s!r} among {identities}; raise --identities")
    counts = dict.fromkeys(SPLITS, 0)
    seconds_by_kind: dict[str, float] = {}
    start = time.perf_counter()
    tar: tarfile.TarFile | None = None
    frames_total = 0
    with (out / "manifest.jsonl").open("w") as manifest:
        bar = tqdm(_jobs(n, cfg, seed, pools, workers), total=n, unit="clip", disable=not progress)
        for index, (row, blob) in enumerate(bar):
            shard_name = f"shards/shard-{index // cfg.shard_size:05d}.tar"
            if index % cfg.shard_size == 0:
                if tar is not None:
                    tar.close()
                tar = tarfile.open(out / shard_name, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 one shard open at a time, closed on rollover and below
            assert tar is not None
            member = f"{row['id']}.npz"
            _add_member(tar, member, blob)
            ref = f"{shard_name}::{member}"
            media = {
                "video": ref,
                "audio": ref,
                "stems": {k: ref for k in ("speech", "sfx", "ambience")},
            }
            manifest.write(json.dumps({**row, **media}, ensure_ascii=False) + "\n")
            counts[row["split"]] += 1
            frames_total += row["num_frames"]
            kind = str(row.get("kind", "speech"))
            seconds_by_kind[kind] = round(seconds_by_kind.get(kind, 0.0) + row["duration"], 3)
        if tar is not None:
            tar.close()
    elapsed = time.perf_counter() - start
    report = SynthReport(
        schema_version=SCHEMA_VERSION,
        n=n,
        seed=seed,
        identities=identities,
        splits=counts,
        shards=(n + cfg.shard_size - 1) // cfg.shard_size,
        hours=round(frames_total / cfg.fps / 3600, 4),
        seconds_by_kind=seconds_by_kind,
        workers=workers,
        seconds=round(elapsed, 2),
        clips_per_s=round(n / elapsed, 2),
        world=asdict(replace(cfg)),
    )
    (out / "dataset.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %d clips (%s) to %s at %.2f clips/s", n, counts, out, n / elapsed)
    return report
