"""The client side of the protocol, sans-I/O (docs/protocol.md, Resume).

:class:`ClientProtocol` turns websocket text into typed server messages and typed client
messages into JSON text; it tracks the server's sequence numbers so that a resumed connection
delivers every event exactly once (a replayed duplicate decodes to ``None``), and says when an
``ack`` is due. Nothing here touches a socket or the event loop: ``unison_sdk.client`` (and
the tests' and benchmarks' clients) feed it and send what it returns.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode, urlsplit, urlunsplit

from unison_sdk.protocol.messages import (
    Ack,
    AudioBegin,
    AudioEnd,
    ClientMessage,
    ClientState,
    Close,
    Interrupt,
    Offer,
    Ping,
    ProtocolError,
    Say,
    ServerMessage,
    SetState,
    decode_server,
)

__all__ = ["ACK_EVERY", "ACK_PERIOD_S", "ClientProtocol", "resume_url", "ws_url_for_token"]

ACK_EVERY = 32  # messages between acks …
ACK_PERIOD_S = 1.0  # … or seconds, whichever first
WS_PATH = "/v1/ws"


class ClientProtocol:
    """Decode server messages (dropping replayed duplicates) and encode client commands."""

    def __init__(self) -> None:
        self.last_seq = 0  # highest sequence number delivered
        self._acked = 0
        self._acked_at = 0.0
        self.duplicates = 0  # replayed messages dropped (for tests and stats)

    # ---- server → client ---------------------------------------------------------------------
    def receive(self, text: str | bytes) -> ServerMessage | None:
        """One websocket text message → a typed message, or ``None`` for a duplicate (or a
        newer server's message type)."""
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise ProtocolError(f"server sent malformed JSON: {e}") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise ProtocolError(f"server message without a type: {obj!r:.200}")
        seq = obj.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            if seq <= self.last_seq:
                self.duplicates += 1
                return None
            self.last_seq = seq
        else:
            seq = 0
        try:
            return decode_server(obj, seq)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"bad {obj.get('type')!r} message: {e!r}") from e

    def ack_due(self, now: float) -> str | None:
        """The ``ack`` to send now, if enough was received since the last one."""
        if self.last_seq <= self._acked:
            return None
        if self.last_seq - self._acked < ACK_EVERY and now - self._acked_at < ACK_PERIOD_S:
            return None
        self._acked, self._acked_at = self.last_seq, now
        return self.encode(Ack(self.last_seq))

    # ---- client → server ---------------------------------------------------------------------
    @staticmethod
    def encode(msg: ClientMessage) -> str:
        """A typed client message → its websocket text."""
        return json.dumps(msg.wire(), separators=(",", ":"))

    def say(self, uid: str, text: str, *, interrupt: bool, caption: str | None) -> str:
        return self.encode(Say(uid, text, caption, interrupt))

    def interrupt(self) -> str:
        return self.encode(Interrupt())

    def set_state(self, state: ClientState) -> str:
        return self.encode(SetState(state))

    def offer(self, sdp: str, uid: str) -> str:
        return self.encode(Offer(sdp, uid))

    def audio_begin(self, uid: str, sample_rate: int, *, stream: bool = False) -> str:
        return self.encode(AudioBegin(uid, sample_rate, stream))

    def audio_end(self, uid: str) -> str:
        return self.encode(AudioEnd(uid))

    def ping(self, uid: str) -> str:
        return self.encode(Ping(uid))

    def close(self) -> str:
        return self.encode(Close())


def _ws_base(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return scheme, parts.netloc


def ws_url_for_token(base_url: str, token: str) -> str:
    """``ws://host/v1/ws?token=…`` for a server base URL (http/https/ws/wss)."""
    scheme, netloc = _ws_base(base_url)
    return urlunsplit((scheme, netloc, WS_PATH, urlencode({"token": token}), ""))


def resume_url(ws_url: str, resume_token: str, last_seq: int) -> str:
    """The URL that resumes a session: ``/v1/ws?resume=…&last_seq=N`` on the same host."""
    scheme, netloc = _ws_base(ws_url)
    query = urlencode({"resume": resume_token, "last_seq": last_seq})
    return urlunsplit((scheme, netloc, WS_PATH, query, ""))
