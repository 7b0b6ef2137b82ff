#!/usr/bin/env python3
"""A scripted virtual host driven over MQTT, the way a game or show controller would.

The server runs the bridge (``unison-stream serve --mqtt-config examples/mosquitto/bridge.yaml``);
this script only talks to the broker: it waits for the channel's ``availability`` to be
``online``, then plays a script: each line is said (``cmd/say`` with a fresh ``request_id``,
QoS 1) and the next waits for its ``evt/utterance`` ``finished``; ``!listen`` / ``!idle`` set
the idle behaviour, ``!interrupt`` cuts the current line, ``!wait 1.5`` pauses. See docs/mqtt.md.

    sh examples/mosquitto/make_passwords.sh && mosquitto -c examples/mosquitto/mosquitto.conf
    python examples/game_bridge.py --password game-secret [--script show.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import uuid
from typing import Any

import aiomqtt

DEFAULT_SCRIPT = [
    "Welcome, everyone, to tonight's show!",
    "!listen",
    "!wait 1",
    "Our first guest is warming up backstage.",
    "Let us give them a big round of applause.",
    "!idle",
]


class Host:
    """Publishes commands for one channel and follows its events."""

    def __init__(self, client: aiomqtt.Client, prefix: str, channel: str) -> None:
        self.client, self.base = client, f"{prefix}/{channel}"
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def follow(self) -> None:
        await self.client.subscribe(f"{self.base}/#", qos=1)
        async for m in self.client.messages:
            raw = m.payload.decode() if isinstance(m.payload, bytes) else str(m.payload)
            try:
                payload: Any = json.loads(raw)
            except ValueError:
                payload = raw
            topic = str(m.topic).removeprefix(self.base + "/")
            if topic != "availability" or payload != "online":
                print(f"  <- {topic}: {payload}")
            await self.events.put((topic, payload))

    async def command(self, cmd: str, **fields: Any) -> str:
        rid = uuid.uuid4().hex[:12]
        print(f"  -> cmd/{cmd} {fields or ''}")
        body = json.dumps({"request_id": rid, **fields})
        await self.client.publish(f"{self.base}/cmd/{cmd}", body, qos=1)
        return rid

    async def until(self, pred: Any, timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                topic, payload = await self.events.get()
                if pred(topic, payload):
                    return payload


async def run_script(host: Host, lines: list[str], timeout: float) -> int:
    await host.until(lambda t, p: t == "availability" and p == "online", timeout)
    print("avatar online")
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line == "!listen":
            await host.command("state", state="listening")
        elif line == "!idle":
            await host.command("state", state="idle")
        elif line == "!interrupt":
            await host.command("interrupt")
        elif line.startswith("!wait"):
            await asyncio.sleep(float(line.split()[1]))
        else:
            rid = await host.command("say", text=line)

            def done(t: str, p: Any, rid: str = rid, line: str = line) -> bool:
                if t == "evt/error" and p.get("request_id") == rid:
                    raise RuntimeError(f"the avatar refused {line!r}: {p['message']}")
                return (
                    t == "evt/utterance"
                    and p.get("request_id") == rid
                    and p["event"]
                    in (
                        "finished",
                        "interrupted",
                    )
                )

            await host.until(done, timeout)
    print("script done")
    return 0


async def main(args: argparse.Namespace) -> int:
    lines = DEFAULT_SCRIPT
    if args.script:
        with open(args.script, encoding="utf-8") as f:
            lines = f.read().splitlines()
    async with aiomqtt.Client(
        args.host, args.port, username=args.username, password=args.password
    ) as client:
        host = Host(client, args.prefix, args.channel)
        follower = asyncio.ensure_future(host.follow())
        try:
            return await run_script(host, lines, args.timeout)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await follower


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username", default="game")
    p.add_argument("--password", default=os.environ.get("GAME_MQTT_PASSWORD"))
    p.add_argument("--prefix", default="unison")
    p.add_argument("--channel", default="lobby")
    p.add_argument("--script", default=None, help="text file: one line or !command per line")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each step")
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse())))
    except (aiomqtt.MqttError, TimeoutError, RuntimeError) as e:
        sys.exit(f"error: {e!r}")
