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
  ``served_rtf``: the engine's media seconds per wall second as the server reports it (median).
- ``loop_lag_ms_p50`` / ``_p99`` / ``_max``: the server's 10 ms ticker over the phase.

Then ``encode_once_cpu_ratio``: server CPU per viewer with 4 broadcast viewers ÷ with 1
viewer (1.0 would mean per-viewer encoding). ``--chromium``: a ``chromium`` phase with the
served page in headless Chromium (``say`` → first audio energy in its ``getStats``,
underruns during speech, A/V playout offsets). The engine is the real one unless
``--engine fake``; the host is printed (``runtime.host_info``).
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
            "loop_lag_ms_p50": lag["p50"],
            "loop_lag_ms_p99": lag["p99"],
            "loop_lag_ms_max": lag["max"],
            "loop_lag_window_covers_phase": phase_s <= 30.0,
        }
    finally:
        for v in viewers:
            await v.close()


def _hop_order(name: str) -> int:
    order = [*HOPS, "audible"]
    return order.index(name[4:]) if name[4:] in order else len(order)


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
    with served(args.engine, list(args.overrides)) as (proc, base):

        async def main() -> dict[str, Any]:
            from unison_stream.runtime import host_info

            model = (await wait_healthy(base))["model"]
            out: dict[str, Any] = {"engine": args.engine, "model": model, "host": host_info()}
            for n in (1, 4):
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
    p.add_argument("overrides", nargs="*", help="key=value passed to serve")
    p.set_defaults(func=run)
