"""The cluster's front door: places each new session on a replica with room (docs/cluster.md).

An aiohttp app in front of many replicas, each a full unison-stream server (engine, websocket,
WebRTC) on its own port. ``POST /v1/sessions`` is checked against the API keys, then forwarded
to the replica :func:`place` chooses; the replica's answer comes back as it is, and its
``ws_url`` names that replica, so the session's websocket and peer connection go straight to
it — every later message of the session stays there (affinity by construction) and media never
passes the front door. Placement follows each replica's reported *headroom* — the sessions it
still admits, which a replica with ``server.max_sessions=auto`` measured on its own host — so a
replica with none is skipped; one that answers ``503`` anyway (filled meanwhile) is skipped for
the next; all full → ``503 capacity`` with a ``Retry-After``. ``GET /healthz`` and
``GET /metrics`` sum the replicas and list each one; ``POST /v1/replicas/{id}/drain`` stops new
sessions on a replica (live ones go on).

Where the replicas are comes from a :class:`Directory` (each replica reports itself there every
``REPORT_S``); :mod:`~unison_stream.cluster.ray_serve` provides one on Ray.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from unison_stream.server.app import error_response
from unison_stream.server.auth import ApiKeys
from unison_stream.server.errors import CapacityError, ServerError

__all__ = ["Directory", "FrontDoor", "Replica", "place"]

log = logging.getLogger(__name__)

REPORT_S = 0.5  # how often a replica reports itself
STALE_S = 3.0  # a replica not heard from for this long is not placed on
FORWARD_TIMEOUT_S = 30.0  # a replica opening a session (the real engine: a second or two)


@dataclass(frozen=True)
class Replica:
    """One replica as it last reported itself."""

    replica: str  # its id
    base_url: str  # http://host:port of its own server
    sessions: int  # engine sessions in use
    capacity: int
    draining: bool
    seen: float  # time.time() of the report
    pid: int = 0
    session_ids: tuple[str, ...] = ()  # the sessions it holds
    # engine sessions it still admits (its measured or configured capacity − in use; 0 while
    # draining); None: not reported (an older replica), read as capacity − sessions
    headroom: int | None = None

    @property
    def room(self) -> int:
        """Engine sessions it admits now, by its report."""
        if self.draining:
            return 0
        if self.headroom is not None:
            return self.headroom
        return max(0, self.capacity - self.sessions)

    @classmethod
    def of(cls, row: dict[str, Any]) -> Replica:
        kw = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        kw["session_ids"] = tuple(row.get("session_ids", ()))
        return cls(**kw)


class Directory(Protocol):
    """Where the replicas report themselves (Ray: a named actor)."""

    async def rows(self) -> list[dict[str, Any]]: ...
    async def forget(self, replica: str) -> None: ...
    async def drain(self, replica: str) -> bool: ...


def place(replicas: list[Replica], placed: dict[str, int], now: float) -> list[Replica]:
    """The replicas a new session may go to, best first: heard from lately, not draining, with
    headroom left — less ``placed`` (sessions sent there since their last report) — the most
    headroom first, then the least loaded (ties by id, so placement is deterministic)."""
    out = []
    for r in replicas:
        room = r.room - placed.get(r.replica, 0)
        if now - r.seen <= STALE_S and not r.draining and room > 0:
            load = (r.capacity - room) / max(1, r.capacity)
            out.append((-room, load, r.replica, r))
    return [r for *_, r in sorted(out)]


class FrontDoor:
    """The front door's routes and state (module docstring)."""

    def __init__(
        self, directory: Directory, api_keys: list[str], *, retry_after_s: int = 5
    ) -> None:
        self.directory, self.keys = directory, ApiKeys(api_keys)
        self.retry_after_s = retry_after_s  # the ``Retry-After`` when every replica is full
        # sessions placed that their replica has not reported yet: (replica, session, time)
        self._placements: list[tuple[str, str, float]] = []
        self.sessions: dict[str, str] = {}  # session id → replica (for DELETE)
        self.placed_total = 0
        self.refused_total = 0
        self._http: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/sessions", self.create)
        app.router.add_delete("/v1/sessions/{sid}", self.delete)
        app.router.add_post("/v1/replicas/{rid}/drain", self.drain)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
            self._http = aiohttp.ClientSession(timeout=timeout)
        return self._http

    async def replicas(self) -> list[Replica]:
        """The directory's rows; placements a report now holds are no longer pending."""
        replicas = [Replica.of(r) for r in await self.directory.rows()]
        held = {(r.replica, sid) for r in replicas for sid in r.session_ids}
        now = time.monotonic()
        self._placements = [
            (r, sid, t)
            for r, sid, t in self._placements
            if (r, sid) not in held and now - t < STALE_S
        ]
        return replicas

    def _pending(self) -> dict[str, int]:
        """Sessions placed per replica that no report has held yet (no clocks compared: a
        report lists its session ids)."""
        out: dict[str, int] = {}
        for r, _, _ in self._placements:
            out[r] = out.get(r, 0) + 1
        return out

    # ---- routes ---------------------------------------------------------------------------
    async def create(self, request: web.Request) -> web.Response:
        try:
            self.keys.check(request.headers.get("Authorization"))
        except ServerError as e:
            return error_response(e)
        body = await request.read()
        replicas = await self.replicas()
        for r in place(replicas, self._pending(), time.time()):
            headers = {"Authorization": request.headers["Authorization"]}
            headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
            try:
                async with self._client().post(
                    f"{r.base_url}/v1/sessions", data=body, headers=headers
                ) as resp:
                    answer = await resp.json()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as e:  # gone: never placed on again
                log.warning("replica %s unreachable (%r); forgotten", r.replica, e)
                await self.directory.forget(r.replica)
                continue
            if status == 503:  # filled meanwhile, or draining: the next one
                continue
            if status == 201:
                sid = str(answer["session_id"])
                self._placements.append((r.replica, sid, time.monotonic()))
                self.sessions[sid] = r.replica
                self.placed_total += 1
                answer["replica"] = r.replica
            return web.json_response(answer, status=status)  # 400 / 401: the client's fault
        self.refused_total += 1
        n = len(replicas)
        full = CapacityError(
            f"the cluster is at capacity: all {n} replicas are full (or draining); "
            f"retry in {self.retry_after_s} s"
        )
        return error_response(full, retry_after_s=self.retry_after_s)

    async def delete(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        rid = self.sessions.pop(sid, None)
        target = next((r for r in await self.replicas() if r.replica == rid), None)
        if target is None:
            return web.json_response(
                {"error": {"code": "bad_request", "message": "no such session"}}, status=404
            )
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with self._client().delete(
            f"{target.base_url}/v1/sessions/{sid}", headers=headers
        ) as resp:
            return web.json_response(await resp.json(), status=resp.status)

    async def drain(self, request: web.Request) -> web.Response:
        try:
            self.keys.check(request.headers.get("Authorization"))
        except ServerError as e:
            return error_response(e)
        rid = request.match_info["rid"]
        if not await self.directory.drain(rid):
            return web.json_response(
                {"error": {"code": "bad_request", "message": "no such replica"}}, status=404
            )
        return web.json_response({"replica": rid, "draining": True})

    async def healthz(self, request: web.Request) -> web.Response:
        replicas = await self.replicas()
        now = time.time()
        live = [r for r in replicas if now - r.seen <= STALE_S]
        return web.json_response(
            {
                "status": "ok" if live else "no replicas",
                "replicas": [
                    {k: v for k, v in vars(r).items() if k != "session_ids"} for r in replicas
                ],
                "sessions": sum(r.sessions for r in live),
                "capacity": sum(r.capacity for r in live if not r.draining),
                "headroom": sum(r.room for r in live),
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """Each replica's own ``/metrics`` with a ``replica`` label (one group per metric),
        then cluster totals."""
        replicas = await self.replicas()
        families: dict[str, tuple[list[str], list[str]]] = {}  # name → (HELP/TYPE, samples)
        for r in replicas:
            try:
                async with self._client().get(f"{r.base_url}/metrics") as resp:
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError):
                continue
            for ln in text.splitlines():
                if ln.startswith("# HELP ") or ln.startswith("# TYPE "):
                    comments = families.setdefault(ln.split()[2], ([], []))[0]
                    if ln not in comments:
                        comments.append(ln)
                elif ln:
                    name = ln.split("{")[0].split(" ")[0]
                    families.setdefault(name, ([], []))[1].append(_labelled(ln, r.replica))
        lines = [ln for comments, samples in families.values() for ln in (*comments, *samples)]
        now = time.time()
        live = [r for r in replicas if now - r.seen <= STALE_S]
        totals = [
            ("unison_cluster_replicas", "live replicas", len(live)),
            ("unison_cluster_sessions", "engine sessions in use", sum(r.sessions for r in live)),
            ("unison_cluster_capacity", "engine sessions of replicas taking new ones",
             sum(r.capacity for r in live if not r.draining)),
            ("unison_cluster_headroom_sessions", "engine sessions the replicas still admit",
             sum(r.room for r in live)),
            ("unison_cluster_placed_total", "sessions placed", self.placed_total),
            ("unison_cluster_refused_total", "sessions refused (all full)", self.refused_total),
        ]  # fmt: skip
        for name, help_, value in totals:
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def _labelled(line: str, replica: str) -> str:
    """A Prometheus sample line with ``replica="…"`` added (comments as they are)."""
    if line.startswith("#"):
        return line
    name, _, value = line.rpartition(" ")
    if name.endswith("}"):
        return f'{name[:-1]},replica="{replica}"}} {value}'
    return f'{name}{{replica="{replica}"}} {value}'
