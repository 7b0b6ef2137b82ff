"""``unison-stream bench cluster --json``: placement, affinity, capacity and replica loss on a
local Ray cluster (docs/cluster.md "Figures").

Two Serve replicas of the fake engine (``server.max_sessions`` 4 each) behind a front door in
this process, all on 127.0.0.1. Figures:

- ``sessions_placed_even``: 8 sessions through the front door land 4 and 4;
  ``place_ms_p50`` / ``place_ms_max``: ``POST /v1/sessions`` at the front door (forwarding
  included); ``over_capacity_status`` for a ninth (503 expected);
- ``affinity_violations``: sessions whose ``ws_url`` does not name the replica that holds them
  (each is opened and answers ``ping`` there);
- replica loss: an SDK client mid-utterance, the process of its replica SIGKILLed:
  ``resume_after_replica_loss_ms`` (kill → the SDK's new session ready, ``moved``), the
  in-flight utterance's outcome (``interrupted`` expected) and the next ``say``'s;
  ``lost_messages`` / ``duplicated_messages``: utterance events the client must see (the cut
  one ``interrupted``, the next ``queued → started → finished``) missing / seen twice;
  ``replicas_after`` (Serve starts a new one);
- ``throughput_2_over_1``: chunks per second the engines make with 8 sessions on 2 replicas ÷
  with 4 on 1 (the other drained), on a compute-bound fake (``fake.cpu_s``: CPU seconds of
  pure Python per chunk, one core per replica; a session wants more than a replica makes).
  On a 2-core host 2.0 is the ceiling, less when anything else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from typing import Any

import aiohttp
from aiohttp import web
from unison_sdk.protocol import Ping, Pong, decode_server

from unison_stream.benchmarks.harness import p50_max, print_figures
from unison_stream.cluster.front_door import REPORT_S, STALE_S, Directory, FrontDoor, Replica
from unison_stream.extras import require

__all__ = ["register"]

log = logging.getLogger(__name__)

KEY = "bench-cluster-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LONG = "A long sentence, for the replica to die half way through it. " * 3


async def _rows(directory: Directory, n: int, timeout_s: float = 120.0) -> list[Replica]:
    """Wait until ``n`` live replicas reported; their rows."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        now = time.time()
        rows = [Replica.of(r) for r in await directory.rows()]
        live = [r for r in rows if now - r.seen <= STALE_S]
        if len(live) >= n:
            return live
        await asyncio.sleep(0.2)
    raise TimeoutError(f"fewer than {n} replicas reported within {timeout_s:g} s")


async def _placement(door: str, directory: Directory) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        answers, ms = [], []
        for _ in range(8):
            t = time.perf_counter()
            r = await http.post(f"{door}/v1/sessions", json={}, headers=AUTH)
            ms.append(1000 * (time.perf_counter() - t))
            answers.append((r.status, await r.json()))
        out["over_capacity_status"] = (
            await http.post(f"{door}/v1/sessions", json={}, headers=AUTH)
        ).status
        per: dict[str, int] = {}
        for _, a in answers:
            per[a.get("replica", "?")] = per.get(a.get("replica", "?"), 0) + 1
        out["sessions_per_replica"] = sorted(per.values())
        out["sessions_placed_even"] = out["sessions_per_replica"] == [4, 4]
        out["place_ms"] = p50_max(ms)
        await asyncio.sleep(2 * REPORT_S)
        owner = {sid: r for r in await _rows(directory, 2) for sid in r.session_ids}
        violations = 0
        for status, a in answers:
            held = owner.get(a.get("session_id", ""))
            port = held.base_url.rsplit(":", 1)[1] if held else None
            ws_host = a.get("ws_url", "").split("/")[2] if status == 201 else ""
            if held is None or not ws_host.endswith(f":{port}"):
                violations += 1
                continue
            async with http.ws_connect(a["ws_url"]) as ws:
                await ws.receive_json(timeout=10)  # ready
                await ws.send_json(Ping("p").wire())
                while not isinstance(decode_server(await ws.receive_json(timeout=10), 0), Pong):
                    pass
        out["affinity_violations"] = violations
        for _, a in answers:
            await http.delete(f"{door}/v1/sessions/{a['session_id']}", headers=AUTH)
    return out


async def _replica_loss(door: str, directory: Directory) -> dict[str, Any]:
    from unison_sdk import ConnectionEvent, connect

    await asyncio.sleep(2 * REPORT_S)
    async with connect(door, api_key=KEY, media=False, identity=5, caption="a host") as avatar:
        events = avatar.events()
        first = avatar.session_id
        u1 = await avatar.say(LONG)
        async for ev in u1:
            if ev.event == "started":
                break
        await asyncio.sleep(2 * REPORT_S)
        victim = next(r for r in await _rows(directory, 1) if first in r.session_ids)
        t_kill = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        moved_at = None
        async for event in events:
            if isinstance(event, ConnectionEvent) and event.status == "moved":
                moved_at = time.monotonic()
                break
        await asyncio.wait_for(u1, 10)
        u2 = await avatar.say("Back on another replica.")
        await asyncio.wait_for(u2, 30)
        # what the client must have seen: u1 cut, u2 whole, each event once, in order
        want = [(u1.id, "interrupted"), *((u2.id, e) for e in ("queued", "started", "finished"))]
        seen = [(e.id, e.event) for e in [*u1.events, *u2.events]]
        lost = sum(1 for w in want if w not in seen)
        dup = len(seen) - len(set(seen))
        order_ok = [e for e in seen if e in want] == sorted(set(want), key=want.index)
        return {
            "resume_after_replica_loss_ms": 1000 * (moved_at - t_kill) if moved_at else -1.0,
            "killed_pid": victim.pid,
            "moved_to_another_session": avatar.session_id != first,
            "in_flight_outcome": u1.outcome,
            "next_say_outcome": u2.outcome,
            "lost_messages": lost,
            "duplicated_messages": dup,
            "events_in_order": order_ok,
        }


async def _chunks_total(http: aiohttp.ClientSession, door: str) -> float:
    """Chunks taken from the engines, summed over the replicas (their ``/metrics``)."""
    text = await (await http.get(f"{door}/metrics")).text()
    return sum(
        float(ln.rsplit(" ", 1)[1])
        for ln in text.splitlines()
        if ln.startswith("unison_chunks_total{")
    )


async def _rate(door: str, sessions: int, window_s: float) -> tuple[float, list[str]]:
    """Chunks per second the cluster makes with ``sessions`` sessions open (each wants one
    chunk per chunk length: more than a compute-bound replica makes)."""
    async with aiohttp.ClientSession() as http:
        made = [
            await http.post(f"{door}/v1/sessions", json={}, headers=AUTH) for _ in range(sessions)
        ]
        answers = [await r.json() for r in made if r.status == 201]
        sids = [a["session_id"] for a in answers]
        await asyncio.sleep(2.0)  # every session running
        c0, t0 = await _chunks_total(http, door), time.monotonic()
        await asyncio.sleep(window_s)
        rate = (await _chunks_total(http, door) - c0) / (time.monotonic() - t0)
        for sid in sids:
            await http.delete(f"{door}/v1/sessions/{sid}", headers=AUTH)
    return (rate if len(sids) == sessions else -1.0), [a["replica"] for a in answers]


async def _throughput(door: str, directory: Directory, window_s: float) -> dict[str, Any]:
    """2 replicas ÷ 1 on the compute-bound fake (``fake.cpu_s``): 8 sessions on both, then
    one replica drained and 4 sessions on the other."""
    await asyncio.sleep(2 * REPORT_S)
    two, _ = await _rate(door, 8, window_s)
    rows = await _rows(directory, 2)
    drained = rows[0].replica
    async with aiohttp.ClientSession() as http:
        await http.post(f"{door}/v1/replicas/{drained}/drain", headers=AUTH)
    await asyncio.sleep(2 * REPORT_S)
    one, placed = await _rate(door, 4, window_s)
    return {
        "sessions_on_drained_replica": placed.count(drained),
        "chunks_per_s_2_replicas": two,
        "chunks_per_s_1_replica": one,
        "throughput_2_over_1": two / one if one > 0 else -1.0,
    }


async def _bench(directory: Directory, replicas: int, window_s: float) -> dict[str, Any]:
    runner = web.AppRunner(FrontDoor(directory, [KEY]).app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    door = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        await _rows(directory, replicas)
        out = await _placement(door, directory)
        out.update(await _replica_loss(door, directory))
        await asyncio.sleep(5.0)  # Serve notices the death and starts a replica
        out["replicas_after"] = len(await _rows(directory, replicas, timeout_s=120))
        out.update(await _throughput(door, directory, window_s))
        return out
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    ray = require("ray", "cluster")
    serve = require("ray.serve", "cluster")

    from unison_sdk.media import restrict_ice_to_loopback

    from unison_stream.cluster.ray_serve import start_replicas
    from unison_stream.runtime import host_info

    restrict_ice_to_loopback()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             _node_ip_address="127.0.0.1", logging_level=logging.ERROR)  # fmt: skip
    try:
        overrides = [f"server.api_keys=[{KEY}]", "server.max_sessions=4"]
        overrides += [f"fake.cpu_s={args.cpu_s}", *args.overrides]
        t = time.perf_counter()
        directory = start_replicas("fake", overrides, replicas=2, actor_options={"num_cpus": 0})
        res: dict[str, Any] = {"host": host_info(), "replicas": 2}
        res["start_s"] = time.perf_counter() - t
        res["fake_cpu_s_per_chunk"] = args.cpu_s
        res.update(asyncio.run(_bench(directory, 2, args.window)))
    finally:
        serve.shutdown()
        ray.shutdown()
    print_figures(res, args.json)
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.benchmarks.cli`` for ``bench cluster``."""
    p = sub.add_parser("cluster", help="Ray Serve replicas: placement, affinity, replica loss")
    p.add_argument("--json", action="store_true")
    p.add_argument("--cpu-s", type=float, default=0.1, help="fake engine CPU s per chunk")
    p.add_argument("--window", type=float, default=10.0, help="throughput window (s)")
    p.add_argument("overrides", nargs="*", help="key=value passed to every replica")
    p.set_defaults(func=run)
