"""``unison-stream bench serve --json``: what a client of the server gets, measured at in-process
aiortc clients (and, with ``--chromium``, a headless Chromium page) against a server
subprocess on 127.0.0.1.

Per phase — ``s1`` (one session) and ``s4`` (four concurrent sessions, saying at once):

- ``first_media_ms``: ``say`` sent → first audible 20 ms audio frame decoded at the client
  (median over trials × sessions; ``…_all`` lists them); a trial starts only once the
  client's audio has been quiet for 0.5 s, so it never reads audio left over from the last.
- ``hops_ms``: the same path hop by hop (medians): the server's ``trace_ms`` of the
  ``started`` event (queued, planned, generated, decoded, in_clock, played: ms after the server
  received the say) and ``audible`` at the client (ms after the say was sent; same host).
- ``interrupt_ms``: ``interrupt`` sent → first quiet audio frame at the client.
- ``underrun_slots_during_speech``: idle slots the server cut into utterances (all sessions);
  ``served_rtf`` (median) / ``served_rtf_min``: each session's rtf as the server reports it,
  media seconds per second of engine-worker time spent on that session (its share of a batched
  call). The engine has one worker, so N sessions share it: ``served_rtf_shared`` =
  1 / Σ 1/rtf over the sessions is the media seconds each gets per wall second with the worker
  busy making a chunk for every one in turn (at most ``served_rtf_min``; equal to it for one).
- ``loop_lag_ms_p50`` / ``_p99`` / ``_max``: the server's 10 ms ticker over the phase.

Then ``encode_once_cpu_ratio``: server CPU per viewer with 4 broadcast viewers ÷ with 1
viewer (1.0 would mean per-viewer encoding). ``--chromium``: a ``chromium`` phase with the
served page in headless Chromium (``say`` → first audio energy in its ``getStats``,
underruns during speech, A/V playout offsets). The engine is the real one unless
``--engine fake``; the host is printed (``runtime.host_info``).

``--capacity`` (off by default: it is the longest phase) adds ``max_realtime_sessions``: the
most sessions this host serves at once with every one in real time. For N = 1, 2, … up to
``--capacity-max`` it runs the ``sN`` phase above with fresh sessions (``--capacity-trials``
rounds of all N saying ``LONG_TEXT`` together, the worst case) and stops at the first N where
``served_rtf_shared`` (so also some session's own rtf) is under :data:`REALTIME_RTF` or an
idle slot fell inside speech (or a session was refused or timed out). The per-session rtf
alone would not do: it stays near one session's while N sessions queue on the worker and the
buffer policy holds replies back instead (first media grows). ``capacity.sN`` holds
``served_rtf_min``, ``served_rtf_shared``, ``underrun_slots_during_speech``,
``first_media_ms_p50`` and ``realtime`` for each N tried, so
``max_realtime_sessions`` is the number of leading rows with ``realtime`` true; it equals
``capacity_max_tried`` when even the last N held (the host may serve more). The server is
started with ``server.max_sessions`` at least ``--capacity-max`` so admission is not what stops
it (an override on the command line still wins).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from typing import Any

from unison_stream.benchmarks.browser import chromium_phase
from unison_stream.benchmarks.harness import (
    KEY,
    Viewer,
    cpu_s,
    healthz,
    print_figures,
    served,
    trial,
    wait_healthy,
)
from unison_stream.server.media import HOPS

__all__ = ["register"]

log = logging.getLogger(__name__)

REALTIME_RTF = 1.0  # a session keeps up when its engine makes media at least this fast
PHASES = (1, 4)  # the sessions saying at once in the fixed phases s1 and s4


async def _latencies(base: str, trials: int, sessions: int) -> dict[str, Any]:
    """``trials`` rounds of every one of ``sessions`` private sessions saying at once."""
    viewers = [Viewer() for _ in range(sessions)]
    try:
        for v in viewers:
            await v.open(base, {})
        await asyncio.sleep(3.0)  # idle streams settle
        under0 = [v.stat("speech_underruns") for v in viewers]
        t_phase = time.monotonic()
        rows: list[dict[str, float]] = []
        for i in range(trials):
            rows += await asyncio.gather(*(trial(v, f"t{i}v{j}") for j, v in enumerate(viewers)))
            await asyncio.sleep(1.0)
        await asyncio.sleep(1.5)  # the last stats message after the last trial
        lag = (await healthz(base))["loop_lag_ms"]
        phase_s = time.monotonic() - t_phase
        hops = sorted({k for r in rows for k in r if k.startswith("hop_")}, key=_hop_order)
        hop_ms = {k[4:]: statistics.median(r[k] for r in rows if k in r) for k in hops}
        return {
            "first_media_ms": statistics.median(r["first"] for r in rows),
            "first_media_ms_all": [round(r["first"], 1) for r in rows],
            "hops_ms": hop_ms,
            "interrupt_ms": statistics.median(r["interrupt"] for r in rows),
            "interrupt_ms_all": [round(r["interrupt"], 1) for r in rows],
            "underrun_slots_during_speech": sum(v.stat("speech_underruns") for v in viewers)
            - sum(under0),
            "served_rtf": statistics.median(v.stat("rtf") for v in viewers),
            "served_rtf_min": min(v.stat("rtf") for v in viewers),
            "served_rtf_shared": _shared_rtf([v.stat("rtf") for v in viewers]),
            "loop_lag_ms_p50": lag["p50"],
            "loop_lag_ms_p99": lag["p99"],
            "loop_lag_ms_max": lag["max"],
            "loop_lag_window_covers_phase": phase_s <= 30.0,
        }
    finally:
        for v in viewers:
            await v.close()


def _shared_rtf(rtfs: list[float]) -> float:
    """Media seconds per wall second each session gets when one worker makes a chunk for every
    one in turn, each chunk at its session's ``rtf``: 1 / Σ 1/rtf (0 if one made nothing)."""
    if min(rtfs) <= 0:
        return 0.0
    return 1.0 / sum(1.0 / r for r in rtfs)


def _hop_order(name: str) -> int:
    order = [*HOPS, "audible"]
    return order.index(name[4:]) if name[4:] in order else len(order)


async def _wait_idle(base: str, timeout_s: float = 30.0) -> None:
    """Until the server holds no engine session (the last phase's sessions closed)."""
    end = time.monotonic() + timeout_s
    while (await healthz(base))["in_use"] > 0:
        if time.monotonic() > end:
            raise TimeoutError(f"sessions still open {timeout_s:.0f} s after their clients left")
        await asyncio.sleep(0.2)


async def _capacity(base: str, trials: int, most: int) -> dict[str, Any]:
    """``max_realtime_sessions`` and its per-N table (module docstring): N = 1, 2, … ``most``
    sessions saying at once, up to the first N at which one of them is not in real time."""
    table: dict[str, dict[str, Any]] = {}
    best = 0
    for n in range(1, most + 1):
        log.info("phase capacity: %d trials of %d concurrent sessions", trials, n)
        try:
            await _wait_idle(base)
            res = await _latencies(base, trials, n)
        except (TimeoutError, RuntimeError) as e:  # a timeout or a refused session: not served
            table[f"s{n}"] = {"error": str(e), "realtime": False}
            log.info("phase capacity s%d: %s", n, e)
            break
        row: dict[str, Any] = {
            "served_rtf_min": res["served_rtf_min"],
            "served_rtf_shared": res["served_rtf_shared"],
            "underrun_slots_during_speech": int(res["underrun_slots_during_speech"]),
            "first_media_ms_p50": res["first_media_ms"],
        }
        row["realtime"] = (
            row["served_rtf_shared"] >= REALTIME_RTF and row["underrun_slots_during_speech"] == 0
        )
        table[f"s{n}"] = row
        log.info("phase capacity s%d: %s", n, row)
        if not row["realtime"]:
            break
        best = n
    return {"max_realtime_sessions": best, "capacity_max_tried": most, "capacity": table}


async def _cpu_ratio(base: str, pid: int, window_s: float) -> dict[str, Any]:
    body = {"mode": "broadcast", "channel": "bench"}
    viewers = [Viewer()]
    await viewers[0].open(base, body)
    try:
        await asyncio.sleep(2.0)
        c0 = cpu_s(pid)
        await asyncio.sleep(window_s)
        cpu1 = (cpu_s(pid) - c0) / window_s
        for _ in range(3):
            v = Viewer()
            await v.open(base, body)
            viewers.append(v)
        await asyncio.sleep(2.0)
        c0 = cpu_s(pid)
        await asyncio.sleep(window_s)
        cpu4 = (cpu_s(pid) - c0) / window_s
    finally:
        for v in viewers:
            await v.close()
    return {
        "server_cpu_1_viewer": cpu1,
        "server_cpu_4_viewers": cpu4,
        "encode_once_cpu_ratio": (cpu4 / 4) / cpu1 if cpu1 > 0 else float("nan"),
    }


def run(args: argparse.Namespace) -> int:
    if args.capacity and min(args.capacity_max, args.capacity_trials) < 1:
        raise SystemExit("bench serve: --capacity-max and --capacity-trials must be at least 1")
    overrides = list(args.overrides)
    if args.capacity:  # admit every session the phases open; the command line's own wins
        overrides = [f"server.max_sessions={max(args.capacity_max, *PHASES)}", *overrides]
    with served(args.engine, overrides) as (proc, base):

        async def main() -> dict[str, Any]:
            from unison_stream.runtime import host_info

            model = (await wait_healthy(base))["model"]
            out: dict[str, Any] = {"engine": args.engine, "model": model, "host": host_info()}
            for n in PHASES:
                log.info("phase s%d: %d trials of %d concurrent sessions", n, args.trials, n)
                try:
                    out[f"s{n}"] = await _latencies(base, args.trials, n)
                except TimeoutError as e:  # reported, the other phases still run
                    out[f"s{n}"] = {"error": str(e)}
                log.info("phase s%d: %s", n, out[f"s{n}"])
            if args.chromium:
                log.info("phase chromium: %d trials in headless Chromium", args.trials)
                out["chromium"] = await chromium_phase(base, KEY, args.trials)
            out.update(await _cpu_ratio(base, proc.pid, args.window))
            if args.capacity:
                out.update(await _capacity(base, args.capacity_trials, args.capacity_max))
            return out

        res = asyncio.run(main())
    print_figures(res, args.json)
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.benchmarks.cli`` for ``bench serve``."""
    p = sub.add_parser("serve", help="server latencies and encode-once CPU (JSON figures)")
    p.add_argument("--engine", choices=("real", "fake"), default="real")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--window", type=float, default=4.0, help="CPU measuring window (s)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--chromium", action="store_true", help="also a headless Chromium viewer")
    p.add_argument(
        "--capacity",
        action="store_true",
        help="also max_realtime_sessions: N = 1, 2, ... sessions at once until one falls behind",
    )
    p.add_argument("--capacity-max", type=int, default=8, help="the largest N tried")
    p.add_argument("--capacity-trials", type=int, default=2, help="rounds of saying per N")
    p.add_argument("overrides", nargs="*", help="key=value passed to serve")
    p.set_defaults(func=run)
