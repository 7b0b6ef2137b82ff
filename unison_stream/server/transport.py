"""The media transport interface: how one client's video and audio leave the server.

A :class:`~.session.Session` knows its media path only through :class:`MediaTransport`: the
client's ``offer`` is handed to :meth:`MediaTransport.answer` and whatever it returns goes
back as ``answer``; the channel reads :attr:`MediaTransport.playout` to say where an event's
sample is on this client's own audio track (``audio_pts``). WebRTC (``webrtc_transport.py``)
is the one implementation today; a second transport (WHIP, a plain RTP socket, a recorder)
implements these four members and is passed to :class:`~.session.SessionManager` as its
``transport`` factory, which is called with the session's channel, the server config, a label
for logs and whether the session asked for the mix's stems (``stems``, docs/stems.md).
"""

from __future__ import annotations

from typing import Protocol

from unison_stream.server.channel import Channel
from unison_stream.server.config import ServerConfig
from unison_stream.server.media import Playout

__all__ = ["MediaTransport", "TransportFactory"]


class MediaTransport(Protocol):
    """One client's media connection; :meth:`close` is idempotent."""

    @property
    def playout(self) -> Playout | None:
        """This client's own tracks' playout (private sessions), or ``None`` (none yet, or a
        broadcast viewer fed by the channel's shared encoder)."""

    @property
    def active(self) -> bool:
        """Whether a media connection is open (``/healthz`` counts them)."""

    async def answer(self, offer: str) -> str:
        """Answer the client's session description with this session's media; a new offer
        replaces the old connection. Raise ``BadRequest`` for an offer it cannot take."""

    async def close(self) -> None:
        """Stop the media and close the connection."""


class TransportFactory(Protocol):
    """(channel, config, label for logs, stems?) → the media transport of one session."""

    def __call__(
        self, channel: Channel, cfg: ServerConfig, label: str, *, stems: bool = False
    ) -> MediaTransport: ...
