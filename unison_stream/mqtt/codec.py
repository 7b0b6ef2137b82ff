"""MQTT topics and payloads, sans-I/O: command topic + bytes → a server message or an error;
server messages → (topic, payload, retain). No broker, no event loop (docs/mqtt.md).

Commands reuse the websocket protocol's validation (``parse_client_message``) so a ``say`` over
MQTT obeys exactly the same limits as one over the websocket; ``request_id`` becomes the
utterance id. The MQTT command names (``say``, ``interrupt``, ``state``) are this bridge's own
topics; the message each becomes, and every server message read back, is named by the
protocol module (``unison_sdk.protocol``), never spelled here.

Effect events: a say's ``<tag>`` effects are timed by the engine's planner (the contact time of
each, seconds from the utterance's start, is where its sound's attack is); when the utterance
``started`` at media time T, each effect is published at once on ``evt/effect`` with media
time T + its offset: ahead of being heard, so a game can schedule its own sound or lights.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from unison_sdk.protocol import ServerMessage

from unison_stream.server import protocol as P
from unison_stream.server.errors import BadRequest

__all__ = [
    "COMMANDS",
    "Dedup",
    "Effects",
    "Publish",
    "Topics",
    "effect_publishes",
    "event_publishes",
    "parse_command",
]

# MQTT command topic → the client message it becomes
COMMANDS: dict[str, str] = {
    "say": P.Say.TYPE,
    "interrupt": P.Interrupt.TYPE,
    "state": P.SetState.TYPE,
}

Effects = tuple[tuple[str, float], ...]  # a say's effects: (name, seconds from its start)


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: str
    retain: bool = False


class Topics:
    """Topic names of one channel under ``prefix``."""

    def __init__(self, prefix: str, channel: str) -> None:
        base = f"{prefix}/{channel}"
        self.cmd_filter = f"{base}/cmd/+"
        self.cmd_prefix = f"{base}/cmd/"
        self.utterance = f"{base}/evt/utterance"
        self.error = f"{base}/evt/error"
        self.effect = f"{base}/evt/effect"
        self.state = f"{base}/state"
        self.availability = f"{base}/availability"


def parse_command(command: str, payload: bytes, limits: P.Limits) -> P.ClientMessage:
    """``cmd/<command>`` with a JSON payload → the equivalent client message, or BadRequest.

    The error's ``ref`` is the ``request_id`` when one could be read."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"payload is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise BadRequest("payload must be a JSON object")
    rid = obj.get("request_id")
    if isinstance(rid, bool) or not isinstance(rid, str | int) or not str(rid):
        raise BadRequest("'request_id' (string) is required")
    rid = str(rid)
    if command not in COMMANDS:
        raise BadRequest(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}", ref=rid)
    if "type" in obj or "id" in obj:
        raise BadRequest("'type' and 'id' are not command fields", ref=rid)
    fields = {k: v for k, v in obj.items() if k != "request_id"}
    msg = {**fields, "type": COMMANDS[command], "id": rid}
    try:
        return P.parse_client_message(json.dumps(msg), limits)
    except BadRequest as e:
        raise BadRequest(e.message, ref=rid) from e


def event_publishes(typed: ServerMessage | None, topics: Topics) -> list[Publish]:
    """A server message (decoded from what a websocket is sent) → what the bridge publishes
    for it."""
    if isinstance(typed, P.UtteranceEvent):
        body = {"request_id": typed.id, "event": typed.event, "media_time_s": typed.media_time_s}
        return [Publish(topics.utterance, json.dumps(body))]
    if isinstance(typed, P.StateEvent):
        return [Publish(topics.state, json.dumps({"state": typed.state}), retain=True)]
    if isinstance(typed, P.ErrorEvent):
        body = {"code": typed.code, "message": typed.message, "request_id": typed.ref}
        return [Publish(topics.error, json.dumps(body))]
    return []  # stats, pong, answers: not bridged


def effect_publishes(started: P.UtteranceEvent, effects: Effects, topics: Topics) -> list[Publish]:
    """An utterance's ``started`` event and its planned effects → one ``evt/effect`` each: the
    media time its attack is heard and, when the server says when the utterance's first slot
    was sent, the wall time (Unix s) too."""
    out = []
    for name, offset_s in effects:
        body: dict[str, Any] = {
            "request_id": started.id,
            "effect": name,
            "media_time_s": round(started.media_time_s + offset_s, 4),
        }
        if started.sent_at_unix_s is not None:
            body["at_unix_s"] = round(started.sent_at_unix_s + offset_s, 4)
        out.append(Publish(topics.effect, json.dumps(body)))
    return out


class Dedup:
    """Remembers the last ``window`` request ids; :meth:`seen` says whether one is a repeat."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, request_id: str) -> bool:
        if request_id in self._ids:
            self._ids.move_to_end(request_id)
            return True
        self._ids[request_id] = None
        if len(self._ids) > self.window:
            self._ids.popitem(last=False)
        return False
