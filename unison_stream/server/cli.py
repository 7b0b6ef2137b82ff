"""``unison-stream serve``: the streaming server on one port (default http://127.0.0.1:8080/).

Config keys as ``key=value``: model keys as usual (``sampler.steps=2``), server keys with the
``server.`` prefix (``server.port=9000``, ``server.max_sessions=2``). With no API key configured
(``server.api_keys`` or ``$UNISON_API_KEYS``) a random local key is made and printed with the URL.
``--engine fake`` serves the deterministic test engine (no model; for UI work).
``server.max_sessions=auto`` measures this host before serving and admits as many sessions as
it serves in real time (docs/server.md "Capacity").
``--mqtt-config bridge.yaml`` also runs the MQTT bridge (docs/mqtt.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from unison_stream.extras import require
from unison_stream.server.app import create_app, make_runner
from unison_stream.server.capacity import Capacity, engine_limit, resolve_capacity
from unison_stream.server.config import ServerConfig, load_server_config
from unison_stream.server.engine_api import EngineLike
from unison_stream.server.engines import build_engine, split_overrides
from unison_stream.server.session import MediaSpec

__all__ = ["register"]

log = logging.getLogger(__name__)


async def serve(
    engine: EngineLike,
    cfg: ServerConfig,
    media: MediaSpec,
    *,
    model: str,
    capacity: Capacity,
    mqtt: Any = None,
) -> None:
    """Run until SIGINT/SIGTERM; cancelling it is safe (sessions are closed on the way out).
    ``mqtt``: an :class:`~unison_stream.mqtt.MqttConfig` to run the MQTT bridge with."""
    app = create_app(engine, cfg, media, model=model, capacity=capacity)
    if mqtt is not None:
        from unison_stream.mqtt import attach_mqtt

        attach_mqtt(app, mqtt)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    model_over, server_over = split_overrides(list(args.overrides))
    cfg = load_server_config(args.server_config, server_over)
    mqtt = None
    if args.mqtt_config:
        from unison_stream.mqtt import load_mqtt_config

        mqtt = load_mqtt_config(args.mqtt_config)
    generated = not cfg.api_keys
    if generated:
        cfg.api_keys = [secrets.token_urlsafe(12)]
    if args.cluster == "ray":
        if generated:
            print(f"local API key: {cfg.api_keys[0]}", flush=True)
        return _run_ray(args, cfg, [*server_over, f"api_keys=[{','.join(cfg.api_keys)}]"])
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    engine, media, model = build_engine(
        args.engine,
        preset=args.preset,
        checkpoint=ckpt,
        overrides=model_over,
        max_sessions=engine_limit(cfg),
    )
    try:  # before listening: an "auto" capacity is measured on this engine
        capacity = resolve_capacity(cfg, engine, media.fps)
    except BaseException:
        engine.close()
        raise
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    url = f"http://{host}:{cfg.port}/"
    key = cfg.api_keys[0]
    # the command's own output: where to go and the key to use (the page reads #key=)
    print(f"unison-stream serving {model} at {url}", flush=True)
    log.info("capacity: %d sessions (%s)", capacity.sessions, capacity.source)
    if generated:
        print(f"local API key: {key}", flush=True)
        print(f"open {url}#key={key}", flush=True)
    try:
        asyncio.run(serve(engine, cfg, media, model=model, capacity=capacity, mqtt=mqtt))
    finally:
        engine.close()
    return 0


def _run_ray(args: argparse.Namespace, cfg: ServerConfig, server_over: list[str]) -> int:
    """``serve --cluster ray``: replicas on Ray Serve, the front door here (docs/cluster.md)."""
    ray = require("ray", "cluster")

    from unison_stream.cluster.ray_serve import RayDirectory, serve_front_door, start_replicas

    model_over, _ = split_overrides(list(args.overrides))
    local = args.ray_address == "local"
    init: dict[str, Any] = {"address": args.ray_address, "include_dashboard": False}
    if local and cfg.loopback_only:
        init["_node_ip_address"] = "127.0.0.1"
    ray.init(**init, logging_level=logging.WARNING)
    overrides = [*model_over, *(f"server.{o}" for o in server_over)]
    opts: dict[str, Any] = {"num_cpus": args.replica_cpus, "num_gpus": args.replica_gpus}
    if args.front_door_only:  # the replicas are deployed elsewhere (serve run, RayService)
        directory = RayDirectory.get_or_create()
    else:
        print(f"starting {args.replicas} replicas on Ray ({args.ray_address})", flush=True)
        directory = start_replicas(
            args.engine,
            overrides,
            host=cfg.host,
            replicas=args.replicas,
            max_replicas=args.max_replicas,
            actor_options=opts,
            preset=args.preset,
            checkpoint=args.checkpoint,
        )
    print(f"unison-stream cluster front door at http://{cfg.host}:{cfg.port}/", flush=True)
    try:
        asyncio.run(
            serve_front_door(
                directory, cfg.api_keys, cfg.host, cfg.port, retry_after_s=cfg.retry_after_s
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        serve = require("ray.serve", "cluster")

        if not args.front_door_only:  # what this command deployed, it takes down
            serve.shutdown()
        ray.shutdown()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="the streaming server: WebRTC media, websocket, page")
    p.add_argument("--engine", choices=("real", "fake"), default="real")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="model checkpoint (default: the bundled weights of --preset)",
    )
    p.add_argument("--preset", default="tiny")
    p.add_argument("--server-config", default=None, help="YAML file of ServerConfig keys")
    p.add_argument("--mqtt-config", default=None, help="MqttConfig YAML: run the bridge")
    p.add_argument(
        "--cluster", choices=("none", "ray"), default="none",
        help="ray: engine replicas on Ray Serve behind a front door on server.host:port",
    )  # fmt: skip
    p.add_argument("--replicas", type=int, default=2, help="--cluster ray: Serve replicas")
    p.add_argument(
        "--max-replicas", type=int, default=None,
        help="--cluster ray: autoscale from --replicas up to this on active sessions",
    )  # fmt: skip
    p.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs reserved per replica")
    p.add_argument("--replica-gpus", type=float, default=0.0, help="GPUs per replica")
    p.add_argument(
        "--front-door-only", action="store_true",
        help="--cluster ray: only the front door (replicas deployed by serve run / RayService)",
    )  # fmt: skip
    p.add_argument(
        "--ray-address", default="local",
        help="local: a Ray cluster of this machine; auto or ray://host:port: join one",
    )  # fmt: skip
    p.add_argument("overrides", nargs="*", help="key=value (server keys: server.KEY=value)")
    p.set_defaults(func=run)
