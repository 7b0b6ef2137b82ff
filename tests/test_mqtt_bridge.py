"""The MQTT bridge against a real mosquitto (127.0.0.1, passwords + the example ACL) and the
real server in-process (fake engine): commands, events, retained state and availability,
duplicates, malformed input, ACL, effect events, last will, broker restart with back-off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from unison_sdk import create_avatar

from tests.mqtt_support import USERS, mosquitto, needs_mosquitto
from tests.server_support import API_KEY, running_server
from unison_stream.config import ConfigError
from unison_stream.engine import Engine, EngineSession
from unison_stream.mqtt import MqttBridge, MqttConfig
from unison_stream.mqtt.codec import Dedup, Topics, effect_publishes, parse_command
from unison_stream.mqtt.config import validate_mqtt
from unison_stream.server import protocol as P
from unison_stream.server.app import state_of
from unison_stream.server.errors import BadRequest, Refused

pytestmark = needs_mosquitto


def test_codec_maps_commands_and_rejects_bad_payloads() -> None:
    lim = P.Limits()
    say = parse_command("say", b'{"request_id": "r1", "text": "hi", "interrupt": true}', lim)
    assert say == P.Say(id="r1", text="hi", interrupt=True)
    assert parse_command("state", b'{"request_id": 7, "state": "listening"}', lim) == P.SetState(
        state="listening", id="7"
    )
    bad = {
        ("say", b"not json"): "not JSON",
        ("say", b"[1]"): "JSON object",
        ("say", b'{"text": "hi"}'): "request_id",
        ("say", b'{"request_id": "r", "text": ""}'): "empty",
        ("state", b'{"request_id": "r", "state": "asleep"}'): "state",
        ("dance", b'{"request_id": "r"}'): "unknown command",
        ("dance", b"{}"): "request_id",
    }
    for (cmd, payload), rule in bad.items():
        with pytest.raises(BadRequest, match=rule):
            parse_command(cmd, payload, lim)
    d = Dedup(2)
    assert [d.seen(x) for x in ("a", "a", "b", "c", "a")] == [False, True, False, False, False]
    t = Topics("unison", "lobby")
    assert (t.cmd_filter, t.state, t.availability) == (
        "unison/lobby/cmd/+",
        "unison/lobby/state",
        "unison/lobby/availability",
    )
    with pytest.raises(ConfigError, match="channels"):
        validate_mqtt(MqttConfig(channels=["a/b"]))
    started = P.UtteranceEvent("r", "started", 2.0, sent_at_unix_s=1000.0)
    pubs = effect_publishes(started, (("clap", 0.5), ("bell", 1.25)), t)
    assert [(p.topic, json.loads(p.payload)) for p in pubs] == [
        (
            "unison/lobby/evt/effect",
            {"request_id": "r", "effect": e, "media_time_s": m, "at_unix_s": u},
        )
        for e, m, u in (("clap", 2.5, 1000.5), ("bell", 3.25, 1001.25))
    ]
    no_wall = effect_publishes(P.UtteranceEvent("r", "started", 2.0), (("snap", 0.1),), t)
    assert json.loads(no_wall[0].payload) == {
        "request_id": "r",
        "effect": "snap",
        "media_time_s": 2.1,
    }


class Follower:
    """A game-side client that records every message under ``unison/lobby/#``."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Any, bool]] = []

    async def run(self, client: aiomqtt.Client) -> None:
        await client.subscribe("unison/lobby/#", qos=1)
        with contextlib.suppress(aiomqtt.MqttError):
            await self._read(client)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            payload = m.payload.decode() if isinstance(m.payload, bytes) else m.payload
            with contextlib.suppress(TypeError, ValueError):
                payload = json.loads(payload)
            self.got.append((str(m.topic), payload, bool(m.retain)))

    async def wait(self, pred: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.got:
                if pred(*item):
                    return item
            await asyncio.sleep(0.02)
        raise TimeoutError(self.got[-8:])

    def of(self, suffix: str) -> list[Any]:
        return [p for t, p, _ in self.got if t.endswith(suffix)]


def _bridge_cfg(port: int, **kw: Any) -> MqttConfig:
    return validate_mqtt(
        MqttConfig(
            port=port,
            username="unison-server",
            password=USERS["unison-server"],
            channels=["lobby"],
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
            keepalive_s=2,
            **kw,
        )
    )


def _client(port: int, user: str) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, username=user, password=USERS[user], identifier=user)


def test_commands_events_state_duplicates_errors_and_acl(tmp_path: Path) -> None:
    async def main() -> None:
        with mosquitto(tmp_path) as broker:
            async with running_server() as srv:
                st = state_of(srv.app)
                bridge = MqttBridge(st.manager, st.limits, _bridge_cfg(broker.port))
                await bridge.start()
                await asyncio.wait_for(bridge.connected.wait(), 10)
                f = Follower()
                async with (
                    _client(broker.port, "game") as game,
                    _client(broker.port, "viewer") as viewer,
                ):
                    reader = asyncio.ensure_future(f.run(game))
                    await f.wait(
                        lambda t, p, r: t.endswith("/availability") and p == "online" and r
                    )
                    await f.wait(lambda t, p, r: t.endswith("/state") and r)  # retained on join
                    say = json.dumps({"request_id": "r1", "text": "Welcome to the show"})
                    await game.publish("unison/lobby/cmd/say", say, qos=1)
                    await game.publish("unison/lobby/cmd/say", say, qos=1)  # a redelivery
                    await f.wait(
                        lambda t, p, r: t.endswith("evt/utterance") and p["event"] == "finished"
                    )
                    # malformed input: each one an evt/error, and the bridge goes on
                    await game.publish("unison/lobby/cmd/say", b"\xff not json", qos=1)
                    await game.publish("unison/lobby/cmd/say", '{"text": "no id"}', qos=1)
                    await game.publish(
                        "unison/lobby/cmd/state", '{"request_id": "s", "state": 3}', qos=1
                    )
                    await game.publish("unison/lobby/cmd/jump", '{"request_id": "j"}', qos=1)
                    await f.wait(lambda t, p, r: t.endswith("evt/error") and p["request_id"] == "j")
                    # the ACL: a viewer's command never reaches the bridge
                    await viewer.publish(
                        "unison/lobby/cmd/say",
                        json.dumps({"request_id": "v1", "text": "hack"}),
                        qos=1,
                    )
                    await game.publish(
                        "unison/lobby/cmd/say",
                        json.dumps({"request_id": "r2", "text": "A long story that gets cut " * 3}),
                        qos=1,
                    )
                    await f.wait(
                        lambda t, p, r: (
                            t.endswith("evt/utterance")
                            and p == p | {"request_id": "r2", "event": "started"}
                        )
                    )
                    await game.publish("unison/lobby/cmd/interrupt", '{"request_id": "i1"}', qos=1)
                    await f.wait(
                        lambda t, p, r: (
                            t.endswith("evt/utterance")
                            and p["request_id"] == "r2"
                            and p["event"] == "interrupted"
                        )
                    )
                    await game.publish(
                        "unison/lobby/cmd/state",
                        '{"request_id": "s2", "state": "listening"}',
                        qos=1,
                    )
                    await f.wait(
                        lambda t, p, r: t.endswith("/state") and p == {"state": "listening"}
                    )
                    reader.cancel()
                await bridge.close()
                await bridge.close()  # idempotent
                assert srv.state.manager.sessions == {}
                late = Follower()  # joins after the stop: retained offline + last state
                async with _client(broker.port, "viewer") as v:
                    reader = asyncio.ensure_future(late.run(v))
                    await late.wait(lambda t, p, r: t.endswith("/availability") and r)
                    await late.wait(lambda t, p, r: t.endswith("/state") and r)
                    reader.cancel()
        utt = [(p["request_id"], p["event"]) for p in f.of("evt/utterance")]
        assert [e for r, e in utt if r == "r1"] == ["queued", "started", "finished"], utt
        assert not any(r == "v1" for r, _ in utt), "the ACL stops a viewer's command"
        errors = f.of("evt/error")
        assert len(errors) == 4, errors
        assert {e["code"] for e in errors} == {"bad_request"}
        assert [e["request_id"] for e in errors] == [None, None, "s", "j"]
        assert "not JSON" in errors[0]["message"] and "unknown command" in errors[3]["message"]
        states = [p["state"] for p in f.of("/state")]
        assert "speaking" in states and states[-1] == "listening"
        assert late.of("/availability") == ["offline"], "a clean stop leaves offline retained"
        assert late.of("/state") == [{"state": "listening"}], "the last state is retained"

    asyncio.run(main())


def test_effect_events_carry_the_media_time_each_attack_is_heard(tmp_path: Path) -> None:
    """A say with effects: one ``evt/effect`` per effect once it has started, at its start's
    media time plus the planner's contact time; a say without tags has none."""
    text = "Hello <clap> nice to see you <bell>"

    async def main() -> None:
        with mosquitto(tmp_path) as broker:
            async with running_server() as srv:
                st = state_of(srv.app)
                assert isinstance(st.engine, Engine)  # the fake engine is the real one
                contacts = st.engine.planner.plan(text).contacts  # its own planner's times
                assert [n for n, _ in contacts] == ["clap", "bell"]
                bridge = MqttBridge(st.manager, st.limits, _bridge_cfg(broker.port))
                await bridge.start()
                await asyncio.wait_for(bridge.connected.wait(), 10)
                f = Follower()
                async with _client(broker.port, "game") as game:
                    reader = asyncio.ensure_future(f.run(game))
                    await f.wait(lambda t, p, r: t.endswith("/availability") and p == "online")
                    for rid, words in (("plain", "No effects here"), ("fx", text)):
                        body = json.dumps({"request_id": rid, "text": words})
                        await game.publish("unison/lobby/cmd/say", body, qos=1)
                        await f.wait(
                            lambda t, p, r, rid=rid: (
                                t.endswith("evt/utterance")
                                and p == p | {"request_id": rid, "event": "finished"}
                            )
                        )
                    reader.cancel()
                await bridge.close()
        utt = {
            p["event"]: p["media_time_s"] for p in f.of("evt/utterance") if p["request_id"] == "fx"
        }
        effects = f.of("evt/effect")
        assert [e["request_id"] for e in effects] == ["fx", "fx"], "one per effect, none for plain"
        assert [e["effect"] for e in effects] == ["clap", "bell"]
        for e, (_, offset) in zip(effects, contacts, strict=True):
            assert e["media_time_s"] == pytest.approx(utt["started"] + offset, abs=1e-3)
            assert utt["started"] < e["media_time_s"] < utt["finished"]
            assert e["at_unix_s"] > 0
        topics = [t for t, _, _ in f.got]
        started = next(
            i
            for i, (t, p, _) in enumerate(f.got)
            if t.endswith("evt/utterance") and p == p | {"request_id": "fx", "event": "started"}
        )
        assert topics.index("unison/lobby/evt/effect") > started, "published once it started"

    asyncio.run(main())


def test_last_will_and_reconnect_after_the_broker_restarts(tmp_path: Path) -> None:
    async def main() -> None:
        with mosquitto(tmp_path) as broker:
            async with running_server() as srv:
                st = state_of(srv.app)
                bridge = MqttBridge(st.manager, st.limits, _bridge_cfg(broker.port))
                await bridge.start()
                await asyncio.wait_for(bridge.connected.wait(), 10)
                f = Follower()
                async with _client(broker.port, "game") as game:
                    reader = asyncio.ensure_future(f.run(game))
                    await f.wait(lambda t, p, r: t.endswith("/availability") and p == "online")
                    # the bridge's socket dies without DISCONNECT: the broker sends the will
                    assert bridge._client is not None
                    sock = bridge._client._client.socket()
                    assert isinstance(sock, socket.socket)
                    sock.shutdown(socket.SHUT_RDWR)
                    await f.wait(lambda t, p, r: t.endswith("/availability") and p == "offline")
                    n = len(f.got)
                    await f.wait(
                        lambda t, p, r: (
                            t.endswith("/availability")
                            and p == "online"
                            and f.got.index((t, p, r)) >= n
                        )
                    )
                    reader.cancel()
                assert bridge.connects == 2
                # the broker itself goes away and comes back: the bridge retries with back-off
                broker.stop()
                await asyncio.sleep(0.8)
                assert not bridge.connected.is_set()
                broker.start()
                await asyncio.wait_for(bridge.connected.wait(), 10)
                assert bridge.connects == 3
                f2 = Follower()
                async with _client(broker.port, "game") as game:
                    reader = asyncio.ensure_future(f2.run(game))
                    await game.publish(
                        "unison/lobby/cmd/say",
                        json.dumps({"request_id": "b", "text": "back"}),
                        qos=1,
                    )
                    await f2.wait(
                        lambda t, p, r: t.endswith("evt/utterance") and p["event"] == "finished"
                    )
                    reader.cancel()
                await bridge.close()

    asyncio.run(main())


def test_a_channel_opens_on_the_stored_avatar_its_config_names(tmp_path: Path) -> None:
    """``avatar`` beside ``identity``: each channel's engine session shows that stored avatar,
    looked up under the server's first key (or ``avatar_key``); an unknown id stops start."""
    design = {"hair": "bob", "hair_color": "pink", "skin": "#6ab04c", "seed": 3}

    async def main() -> None:
        with mosquitto(tmp_path) as broker:
            async with running_server() as srv:
                st = state_of(srv.app)
                info = await create_avatar(srv.base, design, api_key=API_KEY)
                cfg = _bridge_cfg(broker.port, identity=5, avatar=info.id)
                bridge = MqttBridge(st.manager, st.limits, cfg)
                await bridge.start()
                try:
                    es = bridge.members["lobby"].session.channel.engine_session
                    assert isinstance(es, EngineSession)  # the fake engine is the real one
                    shown = es.avatar
                    assert shown is not None and shown.source == "design"
                    stored = st.avatars.store.get(API_KEY, info.id).avatar
                    assert np.array_equal(shown.picture, stored.picture)
                finally:
                    await bridge.close()
                elsewhere = _bridge_cfg(broker.port, avatar=info.id, avatar_key="another-key")
                with pytest.raises(Refused, match="no avatar"):  # that key holds no such id
                    await MqttBridge(st.manager, st.limits, elsewhere).start()

    asyncio.run(main())
