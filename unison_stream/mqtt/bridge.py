"""The MQTT bridge (aiomqtt v2): one in-process member per configured broadcast channel.

For each channel the bridge opens an *internal* broadcast session (never reaped) through the
server's :class:`~unison_stream.server.session.SessionManager`, so MQTT commands act exactly like
a websocket client's and the channel's events come back through the same ``post`` path. It
subscribes ``<prefix>/<channel>/cmd/+`` (QoS 1), publishes ``evt/utterance`` / ``evt/error``,
``evt/effect`` (the effects each ``started`` event carries, as the engine planned them), the
retained ``state``, and a retained ``availability`` (``online``; ``offline`` on a clean stop
or, through the last will, when the broker loses us). Bad input becomes ``evt/error``, never an
exception out of the loop; a lost broker is retried with exponential back-off. docs/mqtt.md.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from unison_sdk._tasks import TaskManager
from unison_sdk.protocol import decode_server

from unison_stream.extras import require
from unison_stream.mqtt.codec import (
    Dedup,
    Publish,
    Topics,
    effect_publishes,
    event_publishes,
    parse_command,
)
from unison_stream.mqtt.config import MqttConfig
from unison_stream.server import protocol as P
from unison_stream.server.app import state_of
from unison_stream.server.errors import ServerError
from unison_stream.server.session import Session, SessionManager

if TYPE_CHECKING:
    import aiomqtt
else:
    aiomqtt = require("aiomqtt", "mqtt")

__all__ = ["MqttBridge", "attach_mqtt"]

log = logging.getLogger(__name__)

QOS = 1


class _Member:
    """One channel's internal session and its topics."""

    def __init__(self, name: str, session: Session, cfg: MqttConfig) -> None:
        self.name, self.session = name, session
        self.topics = Topics(cfg.prefix, name)
        self.dedup = Dedup(cfg.dedup_window)


class MqttBridge:
    """Bridges ``cfg.channels`` of a running server to an MQTT broker; start / close."""

    def __init__(self, manager: SessionManager, limits: P.Limits, cfg: MqttConfig) -> None:
        self.manager, self.limits, self.cfg = manager, limits, cfg
        self.tasks = TaskManager("mqtt")
        self.members: dict[str, _Member] = {}
        self._outbox: asyncio.Queue[Publish] = asyncio.Queue(maxsize=4096)
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.connects = 0  # successful broker connections (a reconnect adds one)
        self.handled = 0  # command messages processed (good or bad)
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        # a stored avatar is looked up under the key that holds it (docs/mqtt.md)
        key = cfg.avatar_key or next(iter(self.manager.cfg.api_keys), "")
        for name in cfg.channels:
            req = P.CreateSession(
                identity=cfg.identity,
                avatar=cfg.avatar,
                caption=cfg.caption,
                mode="broadcast",
                channel=name,
            )
            session, _, _ = await self.manager.create(req, api_key=key, internal=True)
            member = _Member(name, session, self.cfg)
            self.members[name] = member
            await session.attach(self._sender(member), self._no_close)
        self.tasks.create(self._run(), name="broker")

    def _sender(self, member: _Member) -> Any:
        async def send(msg: dict[str, Any]) -> None:
            typed = decode_server(msg, int(msg.get("seq", 0)))
            for pub in event_publishes(typed, member.topics):
                self._enqueue(pub)
            if isinstance(typed, P.UtteranceEvent) and typed.event == "started":
                for pub in effect_publishes(typed, typed.effects, member.topics):
                    self._enqueue(pub)

        return send

    @staticmethod
    async def _no_close(code: int, reason: str) -> None:
        return None

    def _enqueue(self, pub: Publish) -> None:
        try:
            self._outbox.put_nowait(pub)
        except asyncio.QueueFull:  # the broker is away for long; keep the newest
            self._outbox.get_nowait()
            self._outbox.put_nowait(pub)

    async def close(self) -> None:
        """Publish ``offline``, disconnect, end the channel sessions; idempotent."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        if client is not None and self.connected.is_set():
            for m in self.members.values():
                try:
                    await asyncio.wait_for(
                        client.publish(m.topics.availability, "offline", qos=QOS, retain=True), 2
                    )
                except (aiomqtt.MqttError, TimeoutError) as e:
                    log.info("[mqtt] could not publish offline: %r", e)
        await self.tasks.close()
        for m in self.members.values():
            await self.manager.end(m.session.id, reason="mqtt bridge stopped")

    # ---- the broker connection ---------------------------------------------------------------
    async def _run(self) -> None:
        """Connect, serve, and on any broker error retry after min → 2·min → … → max."""
        delay = self.cfg.reconnect_min_s
        while True:
            before = self.connects
            try:
                await self._connected_once()
            except aiomqtt.MqttError as e:
                log.warning("[mqtt] broker %s:%s: %s", self.cfg.host, self.cfg.port, e)
            self.connected.clear()
            self._client = None
            if self.connects > before:  # we were connected: start the back-off afresh
                delay = self.cfg.reconnect_min_s
            log.info("[mqtt] reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.reconnect_max_s)

    async def _connected_once(self) -> None:
        cfg = self.cfg
        first = next(iter(self.members.values()))
        will = aiomqtt.Will(first.topics.availability, "offline", qos=QOS, retain=True)
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=cfg.client_id,
            will=will,
            keepalive=cfg.keepalive_s,
            timeout=10,
        )
        async with client:
            self._client = client
            for m in self.members.values():
                await client.subscribe(m.topics.cmd_filter, qos=QOS)
                await client.publish(m.topics.availability, "online", qos=QOS, retain=True)
                state = m.session.channel.clock.state
                await client.publish(m.topics.state, P.dumps({"state": state}), retain=True)
            self.connects += 1
            self.connected.set()
            log.info("[mqtt] connected to %s:%s as %s", cfg.host, cfg.port, cfg.client_id)
            publisher = self.tasks.create(self._publisher(client), name="publisher")
            try:
                async for message in client.messages:
                    await self._on_message(str(message.topic), message.payload)
            finally:
                await self.tasks.cancel(publisher)

    async def _publisher(self, client: aiomqtt.Client) -> None:
        while True:
            pub = await self._outbox.get()
            try:
                await client.publish(pub.topic, pub.payload, qos=QOS, retain=pub.retain)
            except aiomqtt.MqttError:
                self._enqueue(pub)  # sent again after the reconnect
                raise

    # ---- commands ----------------------------------------------------------------------------
    async def _on_message(self, topic: str, payload: Any) -> None:
        """Act on one command; every failure becomes ``evt/error`` (never an exception)."""
        self.handled += 1
        member = next(
            (m for m in self.members.values() if topic.startswith(m.topics.cmd_prefix)), None
        )
        if member is None:
            log.info("[mqtt] message on unexpected topic %s", topic)
            return
        raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
        try:
            msg = parse_command(topic.removeprefix(member.topics.cmd_prefix), raw, self.limits)
            rid = getattr(msg, "id", None)
            if rid is not None and member.dedup.seen(rid):
                log.info("[mqtt] %s: duplicate request %s ignored", member.name, rid)
                return
            await member.session.handle(msg)
        except ServerError as e:
            member.session.post(P.error_msg(e))
        except Exception as e:  # a bug must not kill the bridge
            log.exception("[mqtt] %s: command on %s failed", member.name, topic)
            member.session.post(P.error_msg(ServerError(f"internal error: {type(e).__name__}")))


def attach_mqtt(app: web.Application, cfg: MqttConfig) -> None:
    """Run an :class:`MqttBridge` with the server ``app`` (started after its sessions, stopped
    before them). Call before the app starts."""
    key = web.AppKey("unison_mqtt", MqttBridge)

    async def on_startup(app: web.Application) -> None:
        st = state_of(app)
        bridge = MqttBridge(st.manager, st.limits, cfg)
        app[key] = bridge
        await bridge.start()

    async def on_shutdown(app: web.Application) -> None:
        bridge = app.get(key)
        if bridge is not None:
            await bridge.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.insert(0, on_shutdown)
