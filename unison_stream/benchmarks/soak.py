"""``unison-stream bench soak --minutes M --json``: one served session with an aiortc client for
``M`` minutes (docs/reliability.md), the server a subprocess on 127.0.0.1 as in ``bench serve``.

The client says a sentence every ``--say-every`` seconds (every fourth one interrupted a second
after it starts) and the harness samples the server every 15 s. Figures:

- ``rss_server_mb`` / ``rss_replica_mb`` (start, end; the replica is the server's child
  process) and ``rss_growth_pct``: both together at the end vs after the first 10 % of the run;
- ``fds`` and ``threads`` of the server (start, end);
- ``underrun_slots`` and ``underrun_slots_during_speech`` over the run (the server's stats);
- ``drift_ms_per_min``: the slope of arrival time − RTP time at the client, audio, video and
  audio − video (a clock that runs fast or slow against the wall, or the tracks apart);
- ``event_order_violations``: utterances whose events are not queued → started → finished |
  interrupted (or queued → interrupted), or that never ended.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import numpy as np
from unison_sdk.protocol import Interrupt, Say

from unison_stream.benchmarks.harness import (
    TEXTS,
    Viewer,
    order_violations,
    print_figures,
    sample,
    served,
    wait_healthy,
)

__all__ = ["drift_ms_per_min", "register", "soak"]

SAMPLE_S = 15.0


def drift_ms_per_min(frames: list[tuple[float, int]], rate: int) -> float:
    """Slope of (arrival − media time) against arrival, in ms per minute (0: no drift)."""
    if len(frames) < 10:
        return float("nan")
    t = np.array([a for a, _ in frames])
    media = np.array([p for _, p in frames], np.float64) / rate
    lag = (t - t[0]) - (media - media[0])
    slope = np.polyfit(t - t[0], lag, 1)[0]
    return float(slope * 60_000)


async def soak(base: str, pid: int, minutes: float, say_every: float) -> dict[str, Any]:
    v = Viewer()
    await v.open(base, {})
    try:
        await asyncio.sleep(3.0)
        t0 = time.monotonic()
        end = t0 + 60 * minutes
        samples = [sample(pid)]
        said: list[str] = []
        next_say, next_sample = t0, t0 + SAMPLE_S
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_say:
                uid = f"k{len(said)}"
                said.append(uid)
                await v.send(Say(uid, TEXTS[len(said) % len(TEXTS)]))
                if len(said) % 4 == 0:  # interrupted a second after it starts
                    await v.wait(
                        lambda m, u=uid: m.get("event") == "started" and m.get("id") == u, 60
                    )
                    await asyncio.sleep(1.0)
                    await v.send(Interrupt())
                next_say = now + say_every
            if now >= next_sample:
                samples.append(sample(pid))
                next_sample = now + SAMPLE_S
            await asyncio.sleep(0.2)
        await asyncio.sleep(say_every)  # the last utterance ends
        samples.append(sample(pid))
    finally:
        await v.close()
    warm = next(s for s in samples if s["t"] >= t0 + 0.1 * (end - t0))
    total = [s["rss_server_mb"] + s["rss_replica_mb"] for s in (warm, samples[-1])]
    audio = drift_ms_per_min(v.audio, 48_000)
    video = drift_ms_per_min(v.video, 90_000)
    first, last = samples[0], samples[-1]
    return {
        "minutes": minutes,
        "utterances": len(said),
        "rss_server_mb": [first["rss_server_mb"], last["rss_server_mb"]],
        "rss_replica_mb": [first["rss_replica_mb"], last["rss_replica_mb"]],
        "rss_growth_pct": 100.0 * (total[1] - total[0]) / total[0],
        "fds": [first["fds"], last["fds"]],
        "threads": [first["threads"], last["threads"]],
        "underrun_slots": v.stat("underruns"),
        "underrun_slots_during_speech": v.stat("speech_underruns"),
        "drift_ms_per_min_audio": audio,
        "drift_ms_per_min_video": video,
        "drift_ms_per_min_av": audio - video,
        "event_order_violations": order_violations(v.messages, said),
    }


def run(args: argparse.Namespace) -> int:
    with served(args.engine, list(args.overrides)) as (proc, base):

        async def main() -> dict[str, Any]:
            health = await wait_healthy(base)
            out: dict[str, Any] = {"engine": args.engine, "model": health["model"]}
            out.update(await soak(base, proc.pid, args.minutes, args.say_every))
            return out

        res = asyncio.run(main())
    print_figures(res, args.json)
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.benchmarks.cli`` for ``bench soak``."""
    p = sub.add_parser("soak", help="one served session for --minutes: memory, drift, order")
    p.add_argument("--engine", choices=("real", "fake"), default="fake")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--say-every", type=float, default=8.0, help="seconds between says")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value passed to serve")
    p.set_defaults(func=run)
