"""Admission by measured capacity: how many sessions this host serves in real time
(docs/server.md "Capacity").

A session the host cannot serve in real time does not only play late itself: every admitted
session shares the same cores, so each one falls below real time. The server therefore admits
only as many engine sessions as it can serve with margin, and answers the next ``503`` with a
``Retry-After`` (``SessionManager``).

``server.max_sessions=auto`` sizes this at start-up, before the server listens: one engine
session makes idle chunks for at most ``MEASURE_BUDGET_S`` through the engine's public API
(``open_session``, ``next_chunk``; the first ``WARMUP_CHUNKS`` — the replica's start, the
identity sink and the first step — are not timed), and its real-time factor ``rtf_1`` (media
seconds made per wall second) gives

    capacity = clamp(floor(rtf_1 · BATCH_GAIN / RTF_FLOOR), 1, ceiling)

- ``RTF_FLOOR`` = 1.1: each admitted session keeps a served rtf ≥ 1.1, a 10 % margin over
  real time for the event loop, encoding and the host's jitter;
- ``BATCH_GAIN`` = 1.0: the engine batches sessions into one model call, but on a CPU a
  batch-2 call costs 1.94× a batch-1 call (docs/performance.md) and each session decodes its
  own row, so n sessions cost n times one; the 3 % a batch saves is left inside the margin;
- at least 1 (a host too slow for one session still serves one, with a warning), at most the
  engine's own limit (``ceiling``).

A configured integer is taken as it is. The measurement is a plain function of the engine, so
tests inject one (``measure=``) instead of timing anything.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from unison_stream.server.config import ServerConfig
from unison_stream.server.engine_api import EngineLike

__all__ = [
    "AUTO_CEILING",
    "BATCH_GAIN",
    "RTF_FLOOR",
    "Capacity",
    "Measurement",
    "engine_limit",
    "measure_host",
    "resolve_capacity",
    "sessions_for",
]

log = logging.getLogger(__name__)

RTF_FLOOR = 1.1  # served real-time factor every admitted session keeps
BATCH_GAIN = 1.0  # throughput of n batched sessions ÷ n alone, on a CPU (module docstring)
AUTO_CEILING = 16  # the engine's session limit when the capacity is measured
MEASURE_BUDGET_S = 4.0  # wall time of the timed chunks
WARMUP_CHUNKS = 2  # chunks not timed: the identity sink's commit, the first step's set-up
WARMUP_TIMEOUT_S = 60.0  # a first chunk waits for the replica process's start and first step
MAX_CHUNKS = 24  # timed chunks at most (a fast host stops early)


@dataclass(frozen=True)
class Measurement:
    """One session alone on this host: ``rtf`` media seconds made per wall second."""

    rtf: float
    chunks: int  # chunks timed
    wall_s: float  # over this long


@dataclass(frozen=True)
class Capacity:
    """The engine sessions this server admits, and where the figure came from."""

    sessions: int
    source: Literal["configured", "measured"]
    measured_rtf: float | None = None  # ``rtf_1`` when measured


Measure = Callable[[EngineLike, float], Measurement]  # (engine, fps) → one session's figure


def sessions_for(rtf_one: float, *, ceiling: int) -> int:
    """The most sessions served at rtf ≥ ``RTF_FLOOR`` each, given one alone runs at
    ``rtf_one`` (module docstring), within [1, ``ceiling``]."""
    return max(1, min(ceiling, math.floor(rtf_one * BATCH_GAIN / RTF_FLOOR)))


def engine_limit(cfg: ServerConfig) -> int:
    """The session limit to build the engine with: the configured capacity, or room for
    whatever the measurement allows."""
    return cfg.max_sessions if isinstance(cfg.max_sessions, int) else AUTO_CEILING


def measure_host(engine: EngineLike, fps: float) -> Measurement:
    """Time one idle session of ``engine`` for at most ``MEASURE_BUDGET_S`` after its warm-up
    (blocking; call it before serving, never on a running event loop)."""
    session = engine.open_session(identity=0, caption="")
    media_s, chunks = 0.0, 0
    try:
        for _ in range(WARMUP_CHUNKS):
            if session.next_chunk(timeout=WARMUP_TIMEOUT_S) is None:
                break
        t_start = time.monotonic()
        deadline = t_start + MEASURE_BUDGET_S
        while chunks < MAX_CHUNKS and (left := deadline - time.monotonic()) > 0:
            chunk = session.next_chunk(timeout=left)
            if chunk is None:
                break
            media_s += chunk.video.shape[0] / fps  # (F, H, W, 3): F frames of 1/fps
            chunks += 1
    finally:
        session.close()
    wall = time.monotonic() - t_start
    if chunks == 0:
        raise RuntimeError(
            f"the engine made no chunk while measuring this host (warm-up ≤ "
            f"{WARMUP_TIMEOUT_S:.0f} s, then {MEASURE_BUDGET_S:.0f} s); set server.max_sessions "
            "to an integer"
        )
    return Measurement(rtf=media_s / wall, chunks=chunks, wall_s=wall)


def resolve_capacity(
    cfg: ServerConfig, engine: EngineLike, fps: float, *, measure: Measure = measure_host
) -> Capacity:
    """``server.max_sessions`` as a number of sessions: a configured integer as it is, or
    ``auto`` measured with ``measure`` (module docstring)."""
    if isinstance(cfg.max_sessions, int):
        return Capacity(cfg.max_sessions, "configured")
    log.info(
        "server.max_sessions=auto: measuring this host with one session (%d chunks of warm-up, "
        "then at most %.0f s)…",
        WARMUP_CHUNKS,
        MEASURE_BUDGET_S,
    )
    m = measure(engine, fps)
    n = sessions_for(m.rtf, ceiling=AUTO_CEILING)
    log.info(
        "capacity %d sessions: one session alone runs at %.2f× real time (%d chunks in %.1f s); "
        "each admitted session keeps ≥ %.1f×",
        n,
        m.rtf,
        m.chunks,
        m.wall_s,
        RTF_FLOOR,
    )
    if m.rtf < RTF_FLOOR:
        log.warning(
            "this host serves even one session at only %.2f× real time (< %.1f): it admits one",
            m.rtf,
            RTF_FLOOR,
        )
    return Capacity(n, "measured", m.rtf)
