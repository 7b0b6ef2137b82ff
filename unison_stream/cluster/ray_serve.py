"""Many replicas on Ray Serve (docs/cluster.md).

Each Serve replica of :class:`AvatarReplica` runs one engine behind its own unison-stream
server (websocket, WebRTC, ``/healthz``, ``/metrics``) on a free port of the node, in a thread
with its own event loop, and reports itself to the :class:`Directory` actor every
``REPORT_S``; the :class:`~unison_stream.cluster.front_door.FrontDoor` (an aiohttp app in the
driver, or any number of them) places sessions from that directory. Ray's own HTTP proxy is
not used (``proxy_location="Disabled"``): no byte of a session passes through Ray, and each
replica holds its sessions' state whole. CPUs / GPUs per replica come from the config
(``ray_actor_options``); Serve restarts a replica that dies, on a new port, and the SDK's
failover moves the lost sessions through the front door.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from unison_stream.cluster.front_door import REPORT_S, STALE_S, Directory, FrontDoor
from unison_stream.extras import require
from unison_stream.server.app import create_app, make_runner, state_of
from unison_stream.server.capacity import engine_limit
from unison_stream.server.config import load_server_config
from unison_stream.server.engines import build_engine, split_overrides

if TYPE_CHECKING:
    import ray
    from ray import serve
else:
    ray = require("ray", "cluster")
    serve = require("ray.serve", "cluster")

__all__ = [
    "APP",
    "AvatarReplica",
    "RayDirectory",
    "build_app",
    "sessions_policy",
    "start_replicas",
]

log = logging.getLogger(__name__)

NAMESPACE = "unison"
DIRECTORY = "unison-directory"
APP = "unison"
TARGET_LOAD = 0.75  # autoscaling keeps engine sessions at about this share of capacity
DRAIN_S = 60.0  # a replica being stopped waits this long for its sessions to end


def sessions_policy(ctx: Any) -> tuple[int, dict[str, Any]]:
    """Serve custom autoscaling policy on active engine sessions: enough replicas that the
    sessions fill ``TARGET_LOAD`` of their capacity, always one free session's room, within
    the deployment's min / max; and one replica more when the replicas report no headroom at
    all (each measured its own capacity: the next session would be refused). ``ctx``: Serve's
    ``AutoscalingContext``; the replicas report ``sessions``, ``capacity`` and ``headroom``
    (:meth:`AvatarReplica.record_autoscaling_stats`)."""
    metrics = ctx.aggregated_metrics or {}
    sessions = sum(metrics.get("sessions", {}).values())
    caps = list(metrics.get("capacity", {}).values())
    cap = max(1.0, sum(caps) / len(caps)) if caps else 1.0
    want = max(math.ceil(sessions / (cap * TARGET_LOAD)), math.ceil((sessions + 1) / cap))
    rooms = metrics.get("headroom", {})
    if rooms and sum(rooms.values()) < 1:  # every replica full: one more, whatever the mean
        want = max(want, len(rooms) + 1)
    lo, hi = ctx.capacity_adjusted_min_replicas, ctx.capacity_adjusted_max_replicas
    return max(lo, min(hi, want)), {"sessions": sessions}


@ray.remote(num_cpus=0)
class _DirectoryActor:
    """Replica rows by id, and which replicas are told to drain."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._drain: set[str] = set()

    def report(self, row: dict[str, Any]) -> bool:
        """Store a replica's report; return whether it is to drain."""
        self._rows[row["replica"]] = {**row, "seen": time.time()}
        return row["replica"] in self._drain

    def rows(self) -> list[dict[str, Any]]:
        now = time.time()
        self._rows = {k: r for k, r in self._rows.items() if now - r["seen"] < 10 * STALE_S}
        return [{**r, "draining": r["draining"] or k in self._drain} for k, r in self._rows.items()]

    def forget(self, replica: str) -> None:
        self._rows.pop(replica, None)

    def drain(self, replica: str) -> bool:
        if replica not in self._rows:
            return False
        self._drain.add(replica)
        return True


class RayDirectory(Directory):
    """The front door's view of the directory actor."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    @classmethod
    def get_or_create(cls) -> RayDirectory:
        actor = _DirectoryActor.options(  # type: ignore[attr-defined]
            name=DIRECTORY, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
        ).remote()
        return cls(actor)

    async def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._actor.rows.remote()
        return rows

    async def forget(self, replica: str) -> None:
        await self._actor.forget.remote(replica)

    async def drain(self, replica: str) -> bool:
        ok: bool = await self._actor.drain.remote(replica)
        return ok


@serve.deployment
class AvatarReplica:
    """One engine and its server (module docstring)."""

    def __init__(
        self,
        engine: str,
        overrides: list[str],
        host: str,
        preset: str = "tiny",
        checkpoint: str | None = None,
    ) -> None:
        self.replica = serve.get_replica_context().replica_id.unique_id
        model_over, server_over = split_overrides(overrides)
        cfg = load_server_config(None, [*server_over, f"host={host}", "port=0"])
        self._engine, media, model = build_engine(
            engine,
            preset=preset,
            checkpoint=Path(checkpoint) if checkpoint else None,
            overrides=model_over,
            max_sessions=engine_limit(cfg),
        )
        # server.max_sessions=auto: each replica measures its own node before it serves
        self._app = create_app(self._engine, cfg, media, model=model)
        self._host, self.base_url = host, ""
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="unison-replica-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(120) or not self.base_url:
            raise RuntimeError("the replica's server did not start")
        log.info("replica %s serving at %s", self.replica, self.base_url)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            runner = make_runner(self._app)
            await runner.setup()
            site = web.TCPSite(runner, self._host, 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            # bound to every interface: advertise the node's address (clients dial it)
            wild = self._host in ("0.0.0.0", "::", "")
            advertise = ray.util.get_node_ip_address() if wild else self._host
            self.base_url = f"http://{advertise}:{port}"
            ready.set()
            self._loop.create_task(self._report_loop())

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def _row(self) -> dict[str, Any]:
        m = state_of(self._app).manager
        return {
            "replica": self.replica,
            "base_url": self.base_url,
            "sessions": len(m.channels),
            "capacity": m.capacity,
            "headroom": m.headroom,
            "draining": m.draining,
            "pid": os.getpid(),
            "session_ids": list(m.sessions),
        }

    async def _report_loop(self) -> None:
        directory = RayDirectory.get_or_create()._actor  # whoever comes first makes it
        manager = state_of(self._app).manager
        while True:
            try:
                if await directory.report.remote(self._row()):
                    if not manager.draining:
                        log.info("replica %s draining", self.replica)
                    manager.draining = True
            except Exception as e:  # the directory restarting: report again next time
                log.warning("replica %s could not report: %r", self.replica, e)
            await asyncio.sleep(REPORT_S)

    def info(self) -> dict[str, Any]:
        return self._row()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Active engine sessions, capacity and headroom: what :func:`sessions_policy` scales
        on."""
        row = self._row()
        keys = ("sessions", "capacity", "headroom")
        return {k: float(row[k]) for k in keys}

    async def __del__(self) -> None:
        """Serve stops this replica (downscale, redeploy, delete): drain first — no new
        sessions, the live ones get up to ``DRAIN_S`` to end (then their clients move)."""
        if not hasattr(self, "_app"):  # the constructor failed: nothing to drain
            return
        manager = state_of(self._app).manager
        manager.draining = True
        end = time.monotonic() + DRAIN_S
        while manager.channels and time.monotonic() < end:
            await asyncio.sleep(0.2)
        log.info("replica %s stopping with %d sessions", self.replica, len(manager.channels))
        with contextlib.suppress(Exception):
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._engine.close()


def _deployment(
    replicas: int, max_replicas: int | None, actor_options: dict[str, Any] | None
) -> Any:
    """The replica deployment: fixed ``replicas``, or autoscaled up to ``max_replicas``."""
    opts = {"num_cpus": 1, **(actor_options or {})}
    scale: dict[str, Any] = {"num_replicas": replicas}
    if max_replicas is not None and max_replicas > replicas:
        policy = {"policy_function": f"{__name__}:sessions_policy"}
        scale = {
            "autoscaling_config": {
                "min_replicas": replicas, "max_replicas": max_replicas,
                "initial_replicas": replicas, "policy": policy,
                "metrics_interval_s": 2.0, "look_back_period_s": 10.0,
                "upscale_delay_s": 5.0, "downscale_delay_s": 120.0,
            }
        }  # fmt: skip
    return AvatarReplica.options(  # type: ignore[attr-defined]
        ray_actor_options=opts, graceful_shutdown_timeout_s=DRAIN_S + 10, **scale
    )


def build_app(args: dict[str, Any]) -> Any:
    """The replicas as a Serve application for ``serve run`` / a KubeRay ``RayService``
    (``import_path: unison_stream.cluster.ray_serve:build_app``; ``args``: ``engine``,
    ``overrides`` (list), ``host``, ``replicas``, ``max_replicas``, ``num_cpus``, ``num_gpus``,
    ``preset``, ``checkpoint``). The front door runs beside it:
    ``unison-stream serve --cluster ray --ray-address auto --front-door-only``."""
    opts = {"num_cpus": float(args.get("num_cpus", 1)), "num_gpus": float(args.get("num_gpus", 0))}
    max_r = args.get("max_replicas")
    deployment = _deployment(
        int(args.get("replicas", 2)), int(max_r) if max_r is not None else None, opts
    )
    return deployment.bind(
        str(args.get("engine", "real")),
        [str(o) for o in args.get("overrides", [])],
        str(args.get("host", "127.0.0.1")),
        str(args.get("preset", "tiny")),
        args.get("checkpoint"),
    )


def start_replicas(
    engine: str,
    overrides: list[str],
    *,
    host: str = "127.0.0.1",
    replicas: int = 2,
    max_replicas: int | None = None,
    actor_options: dict[str, Any] | None = None,
    preset: str = "tiny",
    checkpoint: str | None = None,
) -> RayDirectory:
    """Start (or update) the replicas on the connected Ray cluster; return the directory the
    front door reads. Blocks until every replica serves. ``max_replicas`` above ``replicas``
    autoscales between the two on active sessions (:func:`sessions_policy`)."""
    serve.start(proxy_location="Disabled")
    directory = RayDirectory.get_or_create()
    deployment = _deployment(replicas, max_replicas, actor_options)
    app = deployment.bind(engine, overrides, host, preset, checkpoint)
    serve.run(app, name=APP, route_prefix=None)
    return directory


async def serve_front_door(
    directory: Directory, api_keys: list[str], host: str, port: int, *, retry_after_s: int = 5
) -> None:
    """Run the front door until cancelled."""
    door = FrontDoor(directory, api_keys, retry_after_s=retry_after_s)
    runner = web.AppRunner(door.app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
