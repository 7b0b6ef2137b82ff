"""``unison-stream bench load --minutes M --json``: the server full for ``M`` minutes
(docs/reliability.md "Load"), the server a subprocess on 127.0.0.1 as in ``bench serve``.

Capacity (``server.max_sessions``) counts engine sessions, private ones and broadcast channels
alike, so "full" is ``capacity − 1`` private sessions, each with its aiortc viewer, plus one
broadcast channel with 4 viewers. Every private session repeats ``bench serve``'s trial (say a
long sentence → its first audible frame at the client → interrupt a second later → the first
quiet frame) with the others at once; a channel member says a sentence each round. Figures:

- per private session: ``first_media_ms`` and ``interrupt_ms`` (p50 / max), ``served_rtf``
  (the last ``stats``), ``underrun_slots`` and ``underrun_slots_during_speech`` (over the run);
- per broadcast viewer: ``video_fps`` and ``audio_fps`` received over the run;
- ``over_capacity_status``: one more ``POST /v1/sessions`` once full (503 expected), and
  ``admitted_fps_after_refusal``: the lowest video fps of the admitted viewers in the 5 s after
  it (25 means not disturbed).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp
from unison_sdk.protocol import Say

from unison_stream.benchmarks.harness import (
    KEY,
    TEXTS,
    Viewer,
    healthz,
    p50_max,
    print_figures,
    served,
    trial,
    wait_healthy,
)

__all__ = ["register"]

BROADCAST_VIEWERS = 4


def _fps(frames: list[tuple[float, int]], t0: float, t1: float) -> float:
    return sum(1 for t, _ in frames if t0 <= t < t1) / (t1 - t0)


async def _over_capacity(base: str) -> int:
    async with aiohttp.ClientSession() as http:
        r = await http.post(
            f"{base}/v1/sessions", json={}, headers={"Authorization": f"Bearer {KEY}"}
        )
        return r.status


async def load(base: str, minutes: float) -> dict[str, Any]:
    capacity = int((await healthz(base))["capacity"])
    private = [Viewer() for _ in range(max(0, capacity - 1))]
    channel = [Viewer() for _ in range(BROADCAST_VIEWERS)]
    rows: list[list[dict[str, float]]] = [[] for _ in private]
    try:
        for v in private:
            await v.open(base, {})
        for v in channel:
            await v.open(base, {"mode": "broadcast", "channel": "load"})
        await asyncio.sleep(3.0)  # idle streams settle
        under0 = [(v.stat("underruns"), v.stat("speech_underruns")) for v in private]
        t0 = time.monotonic()
        end, i = t0 + 60 * minutes, 0
        while time.monotonic() < end:
            await channel[i % len(channel)].send(Say(f"b{i}", TEXTS[i % len(TEXTS)]))
            got = await asyncio.gather(*(trial(v, f"r{i}s{j}") for j, v in enumerate(private)))
            for j, r in enumerate(got):
                rows[j].append(r)
            await asyncio.sleep(1.0)
            i += 1
        t1 = time.monotonic()
        await asyncio.sleep(1.5)  # the last stats message
        status = await _over_capacity(base)
        t_ref = time.monotonic()
        await asyncio.sleep(5.0)
        admitted = [v.video for v in private] + [v.video for v in channel]
        after = min(_fps(f, t_ref, t_ref + 5.0) for f in admitted) if admitted else float("nan")
        lag = (await healthz(base))["loop_lag_ms"]
        sessions = [
            {
                "first_media_ms": p50_max([r["first"] for r in rs]),
                "interrupt_ms": p50_max([r["interrupt"] for r in rs]),
                "served_rtf": v.stat("rtf"),
                "underrun_slots": v.stat("underruns") - u0[0],
                "underrun_slots_during_speech": v.stat("speech_underruns") - u0[1],
            }
            for v, rs, u0 in zip(private, rows, under0, strict=True)
        ]
        return {
            "minutes": minutes,
            "capacity": capacity,
            "rounds": i,
            "private_sessions": sessions,
            "broadcast_viewers": [
                {"video_fps": _fps(v.video, t0, t1), "audio_fps": _fps(v.audio, t0, t1)}
                for v in channel
            ],
            "over_capacity_status": status,
            "admitted_fps_after_refusal": after,
            "loop_lag_ms_p99_last_30s": lag["p99"],
        }
    finally:
        for v in private + channel:
            await v.close()


def run(args: argparse.Namespace) -> int:
    from unison_stream.runtime import host_info

    with served(args.engine, list(args.overrides)) as (_, base):

        async def main() -> dict[str, Any]:
            health = await wait_healthy(base, timeout_s=180)
            out: dict[str, Any] = {"engine": args.engine, "model": health["model"]}
            out["host"] = host_info()
            out.update(await load(base, args.minutes))
            return out

        res = asyncio.run(main())
    print_figures(res, args.json)
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.benchmarks.cli`` for ``bench load``."""
    p = sub.add_parser("load", help="the server full for --minutes, then one over capacity")
    p.add_argument("--engine", choices=("real", "fake"), default="real")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value passed to serve")
    p.set_defaults(func=run)
