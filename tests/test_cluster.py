"""Scale-out (docs/cluster.md): the front door places sessions on replicas with room, keeps each
session on its replica, answers 503 when all are full, drains; and the same on a local Ray
cluster (Serve replicas, the directory actor) with the fake engine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.server_support import API_KEY, bench_json, running_server
from unison_stream.cluster.front_door import REPORT_S, FrontDoor, Replica, place

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _r(
    rid: str, sessions: int, *, cap: int = 4, draining: bool = False, age: float = 0.0
) -> Replica:
    return Replica(rid, f"http://{rid}", sessions, cap, draining, time.time() - age)


def test_place_prefers_the_least_loaded_and_skips_full_draining_and_silent_replicas() -> None:
    now = time.time()
    rs = [_r("a", 2), _r("b", 1), _r("c", 0, draining=True), _r("d", 4), _r("e", 0, age=10)]
    assert [r.replica for r in place(rs, {}, now)] == ["b", "a"]
    assert [r.replica for r in place(rs, {"b": 2}, now)] == ["a", "b"]  # b holds 3 now
    assert [r.replica for r in place(rs, {"b": 3}, now)] == ["a"]  # placed since: b is full
    assert place([_r("a", 4), _r("b", 4)], {}, now) == []


def test_place_follows_reported_headroom() -> None:
    """A replica that measured its host admits what it reports as headroom, whatever its
    session count says; the one with the most room goes first; none anywhere: nowhere."""
    now = time.time()
    small = Replica("small", "http://small", 1, 2, False, now, headroom=0)  # measured full
    big = Replica("big", "http://big", 2, 6, False, now, headroom=4)
    mid = Replica("mid", "http://mid", 0, 3, False, now, headroom=3)
    assert [r.replica for r in place([small, big, mid], {}, now)] == ["big", "mid"]
    assert [r.replica for r in place([small, big, mid], {"big": 2}, now)] == ["mid", "big"]
    assert place([small, Replica("b", "http://b", 3, 3, False, now, headroom=0)], {}, now) == []
    old = Replica.of({"replica": "o", "base_url": "http://o", "sessions": 1, "capacity": 4,
                      "draining": False, "seen": now})  # fmt: skip
    assert old.headroom is None and old.room == 3  # a report without headroom


class _LocalDirectory:
    """Rows made from in-process servers, as their reports would say: at most every
    ``REPORT_S``, so the front door must count what it placed since (as with Ray)."""

    def __init__(self, servers: dict[str, Any]) -> None:
        self.servers, self.draining = servers, set[str]()
        self._rows: list[dict[str, Any]] = []
        self._at = -1e9

    async def rows(self) -> list[dict[str, Any]]:
        if time.monotonic() - self._at >= REPORT_S:
            self._rows, self._at = self._report(), time.monotonic()
        return self._rows

    def _report(self) -> list[dict[str, Any]]:
        out = []
        for rid, srv in self.servers.items():
            m = srv.state.manager
            m.draining = rid in self.draining
            row = {"replica": rid, "base_url": srv.base, "sessions": len(m.channels),
                   "session_ids": list(m.sessions)}  # fmt: skip
            out.append({**row, "capacity": m.capacity, "headroom": m.headroom,
                        "draining": m.draining, "seen": time.time()})  # fmt: skip
        return out

    async def forget(self, replica: str) -> None:
        self.servers.pop(replica, None)

    async def drain(self, replica: str) -> bool:
        self.draining.add(replica)
        self._at = -1e9  # the replica learns it at once here
        return replica in self.servers


@contextlib.asynccontextmanager
async def _cluster(n: int, capacity: int) -> AsyncIterator[tuple[str, dict[str, Any], Any]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = {
            f"r{i}": await stack.enter_async_context(running_server(max_sessions=capacity))
            for i in range(n)
        }
        directory = _LocalDirectory(servers)
        runner = web.AppRunner(FrontDoor(directory, [API_KEY]).app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield f"http://127.0.0.1:{port}", servers, directory
        finally:
            await runner.cleanup()


async def _create(http: aiohttp.ClientSession, door: str) -> tuple[int, dict[str, Any], str]:
    r = await http.post(f"{door}/v1/sessions", json={"identity": 1}, headers=AUTH)
    return r.status, await r.json(), r.headers.get("Retry-After", "")


def test_front_door_places_evenly_keeps_affinity_refuses_when_full_and_drains() -> None:
    async def main() -> dict[str, Any]:
        async with _cluster(2, 2) as (door, servers, _), aiohttp.ClientSession() as http:
            made = [await _create(http, door) for _ in range(4)]
            over = await _create(http, door)
            per = {rid: sorted(srv.state.manager.sessions) for rid, srv in servers.items()}
            # affinity: each answer's ws_url is the port of the replica that holds the session
            owner = {sid: rid for rid, sids in per.items() for sid in sids}
            ports_ok = all(
                servers[owner[a["session_id"]]].base.split(":")[-1] in a["ws_url"].split("/")[2]
                for _, a, _ in made
            )
            unauth = (await http.post(f"{door}/v1/sessions", json={})).status
            await asyncio.sleep(REPORT_S)  # the next reports
            health = await (await http.get(f"{door}/healthz")).json()
            metrics = await (await http.get(f"{door}/metrics")).text()
            for _, a, _ in made[:2]:
                await http.delete(f"{door}/v1/sessions/{a['session_id']}", headers=AUTH)
            await asyncio.sleep(REPORT_S)
            r = await http.post(f"{door}/v1/replicas/r0/drain", headers=AUTH)
            drained = [await _create(http, door) for _ in range(3)]
            return {"statuses": [s for s, *_ in made], "over": over, "per": per,
                    "ports_ok": ports_ok, "unauth": unauth, "health": health,
                    "metrics": metrics, "drain": r.status,
                    "drained": [(s, a.get("replica")) for s, a, _ in drained]}  # fmt: skip

    r = asyncio.run(main())
    assert r["statuses"] == [201] * 4 and [len(v) for v in r["per"].values()] == [2, 2], r
    assert r["over"][0] == 503 and r["over"][1]["error"]["code"] == "capacity", r["over"]
    assert r["ports_ok"] and r["unauth"] == 401, r
    assert r["health"]["sessions"] == 4 and r["health"]["capacity"] == 4, r["health"]
    assert r["health"]["headroom"] == 0 and r["over"][2] == "5", r  # Retry-After
    assert 'unison_sessions{replica="r0"} 2' in r["metrics"], r["metrics"]
    assert "unison_cluster_sessions 4" in r["metrics"], r["metrics"]
    # two sessions ended (one on each replica), r0 drained: only r1's free slot takes one
    assert r["drain"] == 200 and r["drained"][0] == (201, "r1"), r["drained"]
    assert [s for s, _ in r["drained"][1:]] == [503, 503], r["drained"]


def test_sessions_policy_keeps_headroom_within_the_bounds() -> None:
    pytest.importorskip("ray")
    from types import SimpleNamespace

    from unison_stream.cluster.ray_serve import sessions_policy

    def ctx(sessions: list[float], lo: int = 1, hi: int = 8) -> Any:
        m = {
            "sessions": dict(enumerate(sessions)),
            "capacity": dict.fromkeys(range(len(sessions)), 4.0),
        }
        return SimpleNamespace(aggregated_metrics=m, capacity_adjusted_min_replicas=lo,
                               capacity_adjusted_max_replicas=hi)  # fmt: skip

    assert sessions_policy(ctx([0.0, 0.0]))[0] == 1  # idle: the minimum
    assert sessions_policy(ctx([3.0]))[0] == 1  # 3 of 4 is 75 %, room for one more
    assert sessions_policy(ctx([4.0]))[0] == 2  # full: one more replica
    assert sessions_policy(ctx([4.0, 4.0, 4.0]))[0] == 4  # 12 sessions: 16 slots
    assert sessions_policy(ctx([4.0] * 8))[0] == 8  # capped at max
    assert sessions_policy(ctx([], lo=2))[0] == 2  # no metrics yet
    # replicas that measured a smaller capacity than their mean report no headroom: one more
    full = ctx([2.0, 2.0])
    full.aggregated_metrics["headroom"] = {0: 0.0, 1: 0.0}
    assert sessions_policy(full)[0] == 3


@pytest.mark.slow
def test_bench_cluster_on_local_ray_places_keeps_affinity_and_survives_a_replica_kill() -> None:
    """``bench cluster`` end to end: two Serve replicas (fake engine) on a local Ray cluster,
    eight sessions through the front door, a ninth refused, then the replica of an SDK client
    SIGKILLed mid-utterance."""
    pytest.importorskip("ray")
    r = bench_json(["bench", "cluster", "--json", "--window", "3"], timeout=400)
    assert r["sessions_placed_even"] and r["over_capacity_status"] == 503, r
    assert r["affinity_violations"] == 0, r
    assert r["moved_to_another_session"] and r["in_flight_outcome"] == "interrupted", r
    assert r["next_say_outcome"] == "finished" and r["events_in_order"], r
    assert r["lost_messages"] == 0 and r["duplicated_messages"] == 0, r
    assert 0 < r["resume_after_replica_loss_ms"] < 10_000, r
    assert r["chunks_per_s_1_replica"] > 0 and r["throughput_2_over_1"] > 0, r
    assert r["sessions_on_drained_replica"] == 0, r  # drain on Ray: placed elsewhere


@pytest.mark.slow
def test_a_real_engine_replica_on_ray_speaks_through_the_front_door() -> None:
    """The smoke test with the bundled model, deployed as ``serve run`` / a RayService would
    (``build_app``) with the front door on its own (``--front-door-only``): one Serve replica,
    a session placed through the front door, a ``say`` that starts and finishes on it."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from unison_stream.cluster.ray_serve import APP, RayDirectory, build_app

    ray.init(address="local", num_cpus=2, include_dashboard=False,
             _node_ip_address="127.0.0.1", namespace="unison")  # fmt: skip
    try:
        overrides = [
            f"server.api_keys=[{API_KEY}]",
            "server.max_sessions=1",
            "runtime.replica=thread",
        ]
        serve.start(proxy_location="Disabled")
        args = {"engine": "real", "replicas": 1, "num_cpus": 0, "host": "127.0.0.1",
                "overrides": overrides}  # fmt: skip
        serve.run(build_app(args), name=APP, route_prefix=None)
        directory = RayDirectory.get_or_create()

        async def main() -> list[str]:
            from unison_sdk import connect

            runner = web.AppRunner(FrontDoor(directory, [API_KEY]).app())
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            door = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
            try:
                for _ in range(300):
                    if await directory.rows():
                        break
                    await asyncio.sleep(0.1)
                async with connect(door, api_key=API_KEY, media=False, timeout_s=60) as avatar:
                    utt = await avatar.say("Hello from a replica.")
                    await asyncio.wait_for(utt, 120)
                    return [e.event for e in utt.events]
            finally:
                await runner.cleanup()

        assert asyncio.run(main()) == ["queued", "started", "finished"]
    finally:
        serve.shutdown()
        ray.shutdown()
