"""WebRTC as a :class:`~.transport.MediaTransport`: the peer connection, the SDP exchange, the
codec choice and loopback ICE (docs/server.md).

Each offer gets a fresh aiortc peer connection carrying this session's tracks: its own
:class:`~.media.ClockVideoTrack` / :class:`~.media.ClockAudioTrack` over a
:class:`~.media.Playout` of the channel's clock (private), or the broadcast channel's
encode-once tracks. A private session opened with ``stems`` adds a
:class:`~.media.StemAudioTrack` of the speech and then one of the effects after the mix, one
per further audio m-line of the offer (``AUDIO_TRACKS`` order; each track's msid id is its
name): an offer with one audio line (a browser page) gets the mix alone, as aiortc cannot
answer an offer with fewer audio lines than tracks. Its peer connection bundles every line
on one transport (``max-bundle``): under aiortc's default policy a second line of a kind keeps
the first one's transport, which bundling then leaves unused, so no packet of it arrives.
Loopback only (the default): no ICE
servers (the default would contact a public STUN server) and host candidates restricted to
127.0.0.1 (aioice skips loopback when it lists interfaces; the SDK's
:func:`~unison_sdk.media.restrict_ice_to_loopback` swaps that lookup, process-wide and
idempotent).
"""

from __future__ import annotations

import logging

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from unison_sdk.media import restrict_ice_to_loopback
from unison_sdk.protocol import AUDIO_TRACKS

from unison_stream.server.channel import Channel
from unison_stream.server.config import ServerConfig
from unison_stream.server.errors import BadRequest
from unison_stream.server.media import (
    ClockAudioTrack,
    ClockVideoTrack,
    Playout,
    Stem,
    StemAudioTrack,
)

__all__ = ["WebRTCTransport", "prefer_codecs", "rtc_configuration"]

log = logging.getLogger(__name__)

VIDEO_CODECS = ("video/VP8",)
AUDIO_CODECS = ("audio/opus",)
STEMS: tuple[Stem, ...] = ("speech", "sfx")  # after the mix, as AUDIO_TRACKS orders them
assert ("mix", *STEMS) == AUDIO_TRACKS, "the stems' order is the protocol's"


def rtc_configuration(cfg: ServerConfig) -> RTCConfiguration:
    """The peer-connection configuration: no ICE servers when loopback only."""
    if cfg.loopback_only:
        restrict_ice_to_loopback()
        return RTCConfiguration(iceServers=[])
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in cfg.ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


def prefer_codecs(transceiver: RTCRtpTransceiver, mime_types: tuple[str, ...]) -> None:
    """Offer only ``mime_types`` (plus RTX) on ``transceiver``; call before setRemoteDescription."""
    caps = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    keep = [c for c in caps if c.mimeType in mime_types or c.mimeType.endswith("/rtx")]
    transceiver.setCodecPreferences(keep)


class WebRTCTransport:
    """One session's peer connection (at most one at a time)."""

    def __init__(
        self, channel: Channel, cfg: ServerConfig, label: str, *, stems: bool = False
    ) -> None:
        self.channel, self.cfg, self.label = channel, cfg, label
        self.stems = stems  # private sessions only (the create-session rule)
        self.pc: RTCPeerConnection | None = None
        self._playout: Playout | None = None

    @property
    def playout(self) -> Playout | None:
        return self._playout

    @property
    def active(self) -> bool:
        return self.pc is not None

    def _tracks(self, audio_lines: int) -> list[MediaStreamTrack]:
        """Video, the mix, and (``stems``) a stem for each further audio line offered."""
        if self.channel.encoder is not None:  # broadcast: the channel's encode-once tracks
            video, audio = self.channel.encoder.add_viewer()
            return [video, audio]
        self._playout = playout = Playout(self.channel.clock)
        mix = ClockAudioTrack(playout, named=self.stems)
        tracks: list[MediaStreamTrack] = [ClockVideoTrack(playout), mix]
        if self.stems:
            extra = max(0, audio_lines - 1)
            tracks += [StemAudioTrack(playout, stem) for stem in STEMS[:extra]]
        return tracks

    async def answer(self, offer: str) -> str:
        """Answer an offer with this session's tracks; a new offer replaces the old connection."""
        await self.close()
        config = rtc_configuration(self.cfg)
        if self.stems:  # aiortc's "balanced" leaves a second audio line on a dead transport
            config.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
        pc = RTCPeerConnection(configuration=config)
        self.pc = pc
        audio_lines = sum(1 for line in offer.splitlines() if line.startswith("m=audio"))
        try:
            tracks = self._tracks(audio_lines)
        except Exception:
            await self.close()
            raise
        for track in tracks:  # video, then the audio tracks in AUDIO_TRACKS order
            pc.addTrack(track)
        for t in pc.getTransceivers():  # before setRemoteDescription, or it is ignored
            prefer_codecs(t, VIDEO_CODECS if t.kind == "video" else AUDIO_CODECS)

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            log.info("[%s] peer connection %s", self.label, pc.connectionState)
            if pc.connectionState == "failed" and self.pc is pc:
                await self.close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:
            await self.close()
            raise BadRequest(f"bad SDP offer: {e}") from e
        assert pc.localDescription is not None
        return pc.localDescription.sdp

    async def close(self) -> None:
        """Stop this session's tracks and close the peer connection; idempotent."""
        pc, self.pc = self.pc, None
        if pc is None:
            return
        for sender in pc.getSenders():
            if sender.track is not None:
                sender.track.stop()
        try:
            await pc.close()
        except Exception as e:  # aiortc cannot close a connection a bad offer left half built
            log.info("[%s] closing a half-built peer connection: %r", self.label, e)
