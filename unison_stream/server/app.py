"""HTTP routes, the websocket and the page on one port (aiohttp); thin asyncio glue.

Everything that decides something lives elsewhere: parsing and validation in ``protocol.py``
(sans-I/O), tokens in ``auth.py``, lifecycles in ``session.py``. Routes (docs/protocol.md):
``POST /v1/sessions``, ``DELETE /v1/sessions/{id}``, ``GET /v1/ws?token=…``, ``GET /healthz``,
``GET /metrics``, ``GET /`` (the browser page) and ``/static/…``; the avatar routes
(``/v1/avatars…``) are in ``avatar_routes.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from unison_stream.server import protocol as P
from unison_stream.server.auth import ApiKeys, TokenSigner
from unison_stream.server.avatar_routes import add_avatar_routes, read_body
from unison_stream.server.avatars import AvatarService
from unison_stream.server.capacity import Capacity, resolve_capacity
from unison_stream.server.config import ServerConfig
from unison_stream.server.engine_api import EngineLike
from unison_stream.server.errors import BadRequest, ServerError, Unauthorized
from unison_stream.server.looplag import LoopLag
from unison_stream.server.session import MediaSpec, SessionManager

__all__ = ["STATIC_DIR", "ServerState", "create_app", "error_response", "make_runner", "state_of"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
WS_FRAME_FACTOR = 16  # frames above limit × this are refused by aiohttp itself (close 1009)


class ServerState:
    """What the routes share: config, keys, token signer, session manager, model name."""

    def __init__(
        self,
        engine: EngineLike,
        cfg: ServerConfig,
        media: MediaSpec,
        *,
        model: str,
        capacity: Capacity,
    ) -> None:
        self.cfg, self.media, self.model, self.engine = cfg, media, model, engine
        self.capacity = capacity
        self.keys = ApiKeys(cfg.api_keys)
        self.signer = TokenSigner(cfg.token_secret, ttl_s=cfg.token_ttl_s)
        # resume tokens (in ``ready``) live as long as a session may; their own key, so a
        # session token is never a resume token nor the reverse
        resume_secret = f"{cfg.token_secret}:resume" if cfg.token_secret else ""
        self.resume_signer = TokenSigner(resume_secret, ttl_s=cfg.max_duration_s)
        self.avatars = AvatarService(cfg, engine, width=media.width, height=media.height)
        self.manager = SessionManager(
            engine, cfg, media, self.signer, capacity=capacity.sessions, avatars=self.avatars
        )
        self.limits = P.limits_for(cfg)
        self.ws_errors = 0
        self.loop_lag = LoopLag()


STATE_KEY = web.AppKey("unison_state", ServerState)


def error_response(err: ServerError, *, retry_after_s: int | None = None) -> web.Response:
    """The JSON body and status of an HTTP error (docs/protocol.md); a ``503`` (at capacity)
    says when to try again in ``Retry-After`` when ``retry_after_s`` is given."""
    body = {"error": {"code": err.code, "message": err.message}}
    headers = {}
    if err.http_status == 503 and retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return web.json_response(body, status=err.http_status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except ServerError as e:
        return error_response(e, retry_after_s=_state(request).cfg.retry_after_s)


def _state(request: web.Request) -> ServerState:
    return request.app[STATE_KEY]


# ---- routes -------------------------------------------------------------------------------------


async def create_session(request: web.Request) -> web.Response:
    st = _state(request)
    key = st.keys.check(request.headers.get("Authorization"))
    raw = await read_body(request, P.picture_body_limit(st.limits))
    req = P.parse_create_session(raw, st.limits)
    session, token, exp = await st.manager.create(req, api_key=key)
    scheme = "wss" if request.secure else "ws"
    ws_url = f"{scheme}://{request.host}/v1/ws?token={token}"
    body = {"session_id": session.id, "token": token, "expires_at": exp, "ws_url": ws_url}
    return web.json_response(body, status=201)


async def delete_session(request: web.Request) -> web.Response:
    st = _state(request)
    sid = request.match_info["sid"]
    auth = request.headers.get("Authorization")
    if not st.keys.accepts(auth):
        token = (auth or "").removeprefix("Bearer ").strip() or request.query.get("token")
        st.signer.verify(token, session_id=sid)
    if not await st.manager.end(sid, reason="deleted by client"):
        return web.json_response(
            {"error": {"code": BadRequest.code, "message": "no such session"}}, status=404
        )
    return web.json_response({"session_id": sid, "ended": True})


async def healthz(request: web.Request) -> web.Response:
    st = _state(request)
    m = st.manager
    return web.json_response(
        {
            "status": "ok",
            "model": st.model,
            "sessions": len(m.sessions),
            "channels": len(m.channels),
            "capacity": m.capacity,
            "capacity_source": st.capacity.source,
            "measured_rtf": st.capacity.measured_rtf,
            "in_use": m.in_use,
            "headroom": m.headroom,
            "draining": m.draining,
            "peer_connections": m.peer_connections(),
            "loop_lag_ms": {k: round(v, 2) for k, v in st.loop_lag.summary().items()},
        }
    )


async def metrics(request: web.Request) -> web.Response:
    st = _state(request)
    m = st.manager
    rows = [
        ("unison_sessions", "gauge", "open sessions", len(m.sessions)),
        ("unison_channels", "gauge", "engine sessions in use", len(m.channels)),
        ("unison_capacity", "gauge", "engine sessions admitted at most", m.capacity),
        ("unison_sessions_in_use", "gauge", "engine sessions in use", m.in_use),
        ("unison_headroom_sessions", "gauge", "engine sessions still admitted", m.headroom),
        ("unison_peer_connections", "gauge", "open peer connections", m.peer_connections()),
        ("unison_sessions_created_total", "counter", "sessions created", m.created_total),
        ("unison_sessions_reaped_total", "counter", "sessions reaped", m.reaped_total),
        ("unison_ws_errors_total", "counter", "error messages sent", st.ws_errors),
    ]
    ch = list(m.channels.values())
    underruns = m.closed_underruns + sum(c.clock.underruns for c in ch)
    errors = m.closed_engine_errors + sum(c.errors for c in ch)
    chunks = m.closed_chunks + sum(c.clock.chunks_in for c in ch)
    rows += [
        ("unison_chunks_total", "counter", "chunks taken from the engine", chunks),
        ("unison_underruns_total", "counter", "idle slots", underruns),
        ("unison_engine_errors_total", "counter", "engine faults", errors),
    ]
    lines = []
    for name, kind, help_, value in rows:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
    lag = st.loop_lag.summary()
    lines += ["# HELP unison_loop_lag_ms event-loop lag of a 10 ms ticker, last 30 s"]
    lines += ["# TYPE unison_loop_lag_ms gauge"]
    lines += [
        f'unison_loop_lag_ms{{quantile="{q}"}} {lag[k]:.3f}'
        for q, k in (("0.5", "p50"), ("0.99", "p99"), ("1", "max"))
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


def _last_seq(request: web.Request) -> int:
    raw = request.query.get("last_seq", "0")
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest("'last_seq' must be a non-negative integer")
    return int(raw)


async def websocket(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    resume_token = request.query.get("resume")
    last_seq: int | None = None
    if resume_token is not None:  # ?resume=<resume token>&last_seq=N
        sid = st.resume_signer.verify(resume_token)
        last_seq = _last_seq(request)
    else:
        sid = st.signer.verify(request.query.get("token"))
    session = st.manager.sessions.get(sid)
    if session is None:
        raise Unauthorized("the token's session has ended")
    if last_seq is None and session.ws_connected:
        raise BadRequest("this session already has a websocket")
    if last_seq is not None:
        session.check_resumable(last_seq)
    ws = web.WebSocketResponse(
        heartbeat=st.cfg.keepalive_s,
        max_msg_size=st.cfg.max_message_bytes * WS_FRAME_FACTOR,
        timeout=2.0,
    )
    await ws.prepare(request)

    async def send(msg: dict[str, Any]) -> None:
        await ws.send_str(P.dumps(msg))

    async def close_ws(code: int, reason: str) -> None:
        await ws.close(code=code, message=reason.encode()[:120])

    m = st.media
    ready = P.Ready(
        sid,
        session.mode,
        P.MediaInfo(m.fps, m.width, m.height, m.sample_rate),
        resume_token=st.resume_signer.issue(sid)[0],
        resumed=last_seq is not None,
        last_seq=session.seq,
        stems=session.stems,
    )
    gen = await session.attach(send, close_ws, first=ready, resume_from=last_seq)
    log.info("[%s] websocket %s", sid, "resumed" if last_seq is not None else "connected")
    asked_to_close = False
    try:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.TEXT:
                    if not await session.handle_text(msg.data):
                        asked_to_close = True
                        break
                elif msg.type == WSMsgType.BINARY:
                    await session.handle_binary(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    log.info("[%s] websocket error: %r", sid, ws.exception())
                    break
            except ServerError as e:
                st.ws_errors += 1
                session.post(P.error_msg(e))
            except Exception as e:  # a bug must not take the session down silently
                st.ws_errors += 1
                log.exception("[%s] internal error handling a message", sid)
                session.post(P.error_msg(ServerError(f"internal error: {type(e).__name__}")))
    finally:
        if gen != session.generation:
            pass  # a resumed websocket took this session over
        elif (
            asked_to_close
            or session.closed.is_set()
            or ws.close_code in P.CLEAN_CLOSE
            or st.cfg.resume_grace_s <= 0
        ):
            await st.manager.end(sid, code=session.close_code, reason="websocket closed")
        else:  # lost without a clean close: the client may resume within the grace period
            session.detach(gen)
        await ws.close()
        log.info("[%s] websocket closed (code %s)", sid, ws.close_code)
    return ws


# ---- the application ----------------------------------------------------------------------------


def create_app(
    engine: EngineLike,
    cfg: ServerConfig,
    media: MediaSpec,
    *,
    model: str = "unknown",
    capacity: Capacity | None = None,
) -> web.Application:
    """Build the aiohttp application; sessions start and stop with it. ``capacity``: the
    engine sessions to admit; by default ``server.max_sessions``, measured here (blocking, a
    few seconds) when it is ``auto`` — so build the app before serving."""
    if capacity is None:
        capacity = resolve_capacity(cfg, engine, media.fps)
    app = web.Application(middlewares=[_errors], client_max_size=cfg.max_message_bytes)
    state = ServerState(engine, cfg, media, model=model, capacity=capacity)
    app[STATE_KEY] = state

    async def on_startup(_: web.Application) -> None:
        state.manager.start()
        state.loop_lag.start()

    async def on_shutdown(_: web.Application) -> None:
        await state.loop_lag.stop()
        await state.manager.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_post("/v1/sessions", create_session)
    app.router.add_delete("/v1/sessions/{sid}", delete_session)
    app.router.add_get("/v1/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_avatar_routes(
        app, state.avatars, state.limits, lambda r: state.keys.check(r.headers.get("Authorization"))
    )
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner every server uses: no signal handling of its own, and connections that send
    no complete request within ``server.http_idle_timeout_s`` closed."""
    cfg = app[STATE_KEY].cfg
    return web.AppRunner(app, handle_signals=False, keepalive_timeout=cfg.http_idle_timeout_s)


def state_of(app: web.Application) -> ServerState:
    """The shared state of an app made by :func:`create_app` (tests and the bench inspect it)."""
    return app[STATE_KEY]
