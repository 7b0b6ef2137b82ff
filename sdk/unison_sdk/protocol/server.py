"""The server side of the protocol, sans-I/O: one client session's protocol state.

:class:`ServerProtocol` takes what a websocket delivers — text (or an already typed message,
as the MQTT bridge makes) and binary audio parts — and returns typed commands for the session
to perform; it takes typed server messages and numbers them. It owns every rule of the
conversation that needs no engine and no socket (docs/protocol.md):

- **seq / replay / ack / resume**: every message sent gets ``seq`` 1, 2, 3, …; unacknowledged
  ones are kept (at most ``resume_buffer``) for a websocket that resumes after a drop;
- **dedupe**: a ``say`` / upload whose id the session already accepted (last ``recent_ids``)
  is dropped, so a client may resend what it is unsure arrived;
- **rate limit**: each new ``say`` / upload spends a token of a bucket;
- **upload assembly**: ``audio_begin`` … binary parts … ``audio_end`` become one
  :class:`AudioClip`, or, streamed, :class:`StreamBegin` / :class:`StreamPart` (whole
  samples only) / :class:`StreamEnd`.

Errors are :class:`~.messages.ProtocolError` with the code to report. Time is an argument.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from unison_sdk.protocol.messages import (
    Ack,
    AudioBegin,
    AudioEnd,
    ClientMessage,
    Close,
    Interrupt,
    Limits,
    Offer,
    Ping,
    ProtocolError,
    Say,
    Sequenced,
    SetState,
)
from unison_sdk.protocol.validate import parse_client

__all__ = [
    "AudioClip",
    "Command",
    "ServerProtocol",
    "StreamBegin",
    "StreamEnd",
    "StreamPart",
    "TokenBucket",
]


@dataclass(frozen=True)
class AudioClip:
    """A whole upload, assembled: PCM16 little-endian mono (a whole number of samples)."""

    id: str
    sample_rate: int
    pcm: bytes


@dataclass(frozen=True)
class StreamBegin:
    """A streamed upload opened: its speech follows part by part."""

    id: str
    sample_rate: int


@dataclass(frozen=True)
class StreamPart:
    """The next whole samples of the open stream (PCM16 little-endian mono)."""

    id: str
    pcm: bytes


@dataclass(frozen=True)
class StreamEnd:
    """No more speech for the stream; ``refused``: it was cut for exceeding the cap (what was
    spoken stays, the rest is refused with this message)."""

    id: str
    refused: str | None = None


Command = (
    Offer | Say | Interrupt | SetState | Ping | Close | Ack | AudioClip
    | StreamBegin | StreamPart | StreamEnd
)  # fmt: skip


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; ``take(now)`` spends one."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """Spend a token; ``False`` (nothing spent) when none is left."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass
class _Upload:
    """The upload being received: whole (parts kept) or streamed (parts passed on)."""

    id: str
    rate: int
    stream: bool
    duplicate: bool = False  # a stream resent with an id already accepted: its parts dropped
    size: int = 0  # bytes so far
    parts: list[bytes] = dataclasses.field(default_factory=list)  # whole uploads
    odd: bytes = b""  # streamed: the first byte of a sample split between two parts


class ServerProtocol:
    """Protocol state of one session (module docstring). ``stream_dropped(id)`` is asked
    whether the engine dropped an open stream (an interrupt), so a new one may begin."""

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        resume_buffer: int = 2048,
        say_rate_per_s: float = 4.0,
        say_burst: int = 8,
        max_audio_s: float = 30.0,
        recent_ids: int = 256,
        stream_dropped: Callable[[str], bool] = lambda uid: False,
    ) -> None:
        self.limits = limits or Limits()
        self.resume_buffer, self.max_audio_s = resume_buffer, max_audio_s
        self.stream_dropped = stream_dropped
        self.bucket = TokenBucket(rate=say_rate_per_s, burst=say_burst)
        self.seq = 0  # the last sequence number used
        self._kept: deque[Sequenced] = deque()
        self._lost_through = 0  # messages ≤ this were evicted unacknowledged: no resume before
        self._recent: deque[str] = deque(maxlen=recent_ids)
        self._upload: _Upload | None = None
        self.duplicates = 0  # says / uploads dropped as already accepted

    # ---- client → server ---------------------------------------------------------------------
    def receive_text(self, data: str | bytes, now: float) -> Command | None:
        """One websocket text message → the command to perform (``None``: nothing to do)."""
        return self.receive(parse_client(data, self.limits), now)

    def receive(self, msg: ClientMessage, now: float) -> Command | None:
        """A typed client message → the command to perform (``None``: nothing to do)."""
        if isinstance(msg, Ack):
            self.ack(msg.seq)
            return msg
        if isinstance(msg, Say):
            return msg if self._accept(msg.id, now) else None
        if isinstance(msg, AudioBegin):
            return self._begin(msg, now)
        if isinstance(msg, AudioEnd):
            return self._end(msg.id, now)
        return msg

    def receive_binary(self, data: bytes) -> Command | None:
        """A PCM16 part of the open upload → a :class:`StreamPart` (streamed) or ``None``."""
        if len(data) > self.limits.max_message_bytes:
            raise ProtocolError(f"binary message exceeds {self.limits.max_message_bytes} bytes")
        up = self._upload
        if up is None:
            raise ProtocolError("binary audio outside audio_begin … audio_end")
        up.size += len(data)
        if up.size > self.max_audio_s * up.rate * 2:
            self._upload = None
            refused = f"audio upload exceeds {self.max_audio_s:g} s"
            if up.stream and not up.duplicate:
                return StreamEnd(up.id, refused)
            raise ProtocolError(refused, ref=up.id)
        if not up.stream:
            up.parts.append(data)
            return None
        raw = up.odd + data
        up.odd = raw[len(raw) - len(raw) % 2 :]  # a sample split between parts waits
        pcm = raw[: len(raw) - len(up.odd)]
        return StreamPart(up.id, pcm) if pcm and not up.duplicate else None

    def _accept(self, uid: str, now: float) -> bool:
        """A new say / upload id: remembered and charged against the say rate; ``False`` for
        one already accepted (a retry after a resume)."""
        if uid in self._recent:
            self.duplicates += 1
            return False
        self._recent.append(uid)
        if not self.bucket.take(now):
            raise ProtocolError(
                f"more than {self.bucket.rate:g} 'say' per second", code="rate_limited", ref=uid
            )
        return True

    def _begin(self, msg: AudioBegin, now: float) -> Command | None:
        up = self._upload
        if up is not None and up.stream and msg.stream and up.id == msg.id:
            return None  # resent after a reconnect: the open stream goes on
        if up is not None and up.stream and (up.duplicate or self.stream_dropped(up.id)):
            up = None  # interrupted: its audio_end is not waited for
        elif up is not None and not up.stream and not msg.stream:
            up = None  # a whole upload replaces one not finished
        if up is not None:
            raise ProtocolError("audio_begin while another upload is open", ref=msg.id)
        self._upload = None
        if not msg.stream:
            self._upload = _Upload(msg.id, msg.sample_rate, stream=False)
            return None
        if msg.id in self._recent:  # a retry after a resume: its parts are dropped
            self.duplicates += 1
            self._upload = _Upload(msg.id, msg.sample_rate, stream=True, duplicate=True)
            return None
        self._accept(msg.id, now)  # a refused stream is not opened
        self._upload = _Upload(msg.id, msg.sample_rate, stream=True)
        return StreamBegin(msg.id, msg.sample_rate)

    def _end(self, uid: str, now: float) -> Command | None:
        up = self._upload
        if up is None or up.id != uid:
            raise ProtocolError("audio_end without a matching audio_begin", ref=uid)
        self._upload = None
        if up.stream:
            return None if up.duplicate else StreamEnd(uid)
        raw = b"".join(up.parts)
        if uid in self._recent:
            self.duplicates += 1
            return None
        if not raw or len(raw) % 2:
            raise ProtocolError("audio must be a non-empty whole number of PCM16 samples", ref=uid)
        self._accept(uid, now)
        return AudioClip(uid, up.rate, raw)

    # ---- server → client ---------------------------------------------------------------------
    def send(self, msg: Sequenced) -> Sequenced:
        """Number ``msg`` (``seq``) and keep it for replay until acknowledged."""
        self.seq += 1
        numbered = dataclasses.replace(msg, seq=self.seq)
        self._kept.append(numbered)
        if len(self._kept) > self.resume_buffer:
            self._lost_through = self._kept.popleft().seq
        return numbered

    def ack(self, seq: int) -> None:
        """Forget kept messages up to ``seq`` (the client has them)."""
        while self._kept and self._kept[0].seq <= seq:
            self._kept.popleft()

    def kept(self) -> tuple[Sequenced, ...]:
        """The messages kept for replay (sent, not yet acknowledged), oldest first."""
        return tuple(self._kept)

    def check_resumable(self, last_seq: int) -> None:
        """Raise :class:`ProtocolError` unless every message after ``last_seq`` is kept."""
        if last_seq > self.seq:
            raise ProtocolError(f"cannot resume: last_seq {last_seq} is ahead of the server's")
        if last_seq < self._lost_through:
            raise ProtocolError(f"cannot resume: messages after seq {last_seq} are gone")

    def resume(self, last_seq: int | None) -> list[Sequenced]:
        """The messages to send a websocket that opens after ``last_seq`` (``None``: a first
        websocket, which gets every kept one); what it already has is forgotten."""
        if last_seq is not None:
            self.check_resumable(last_seq)
            self.ack(last_seq)
        after = last_seq or 0
        return [m for m in self._kept if m.seq > after]
