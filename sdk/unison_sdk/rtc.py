"""The client's receive-only WebRTC connection: offer, answer, and frames into fan-outs.

:class:`MediaReceiver` makes a non-trickle offer (recvonly video + audio, every candidate
gathered first, no ICE servers; loopback-only candidates against a server on this machine),
takes the server's answer, and publishes each received frame to the avatar's fan-outs as
numpy frames — only while someone subscribes, so an unread stream costs no conversion. A
session with stems is offered one audio line per track of ``AUDIO_TRACKS`` (the mix, its
speech, its effects); each received audio track goes to the fan-out its id names (the
server's msid track id), and any other to the mix's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from unison_sdk._tasks import TaskManager
from unison_sdk.media import (
    AudioFrame,
    Fanout,
    VideoFrame,
    audio_frame,
    is_loopback_url,
    restrict_ice_to_loopback,
    video_frame,
)
from unison_sdk.protocol import AUDIO_TRACKS, AudioTrack

__all__ = ["MediaReceiver"]


class MediaReceiver:
    """At most one peer connection at a time; a new :meth:`offer` replaces the old one."""

    def __init__(
        self,
        url: str,
        tasks: TaskManager,
        video: Fanout[VideoFrame],
        audio: Mapping[AudioTrack, Fanout[AudioFrame]],
    ) -> None:
        self.url, self._tasks, self._video, self._audio = url, tasks, video, audio
        self.pc: Any = None

    @property
    def usable(self) -> bool:
        """Whether the current connection can go on (else negotiate again)."""
        return self.pc is not None and self.pc.connectionState not in ("failed", "closed")

    async def offer(self, *, stems: bool = False) -> str:
        """A fresh peer connection's offer SDP (candidates gathered); ``stems``: one audio
        line per track of ``AUDIO_TRACKS``, else the mix's alone."""
        from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

        if is_loopback_url(self.url):
            restrict_ice_to_loopback()
        await self.close()
        config = RTCConfiguration(iceServers=[])
        if stems:  # aiortc's "balanced" leaves a second audio line on a transport never used
            config.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
        pc = RTCPeerConnection(configuration=config)
        self.pc = pc
        pc.addTransceiver("video", direction="recvonly")
        for _ in AUDIO_TRACKS if stems else AUDIO_TRACKS[:1]:
            pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def _on_track(track: Any) -> None:
            self._tasks.create(self._consume(track), name=f"track-{track.kind}")

        await pc.setLocalDescription(await pc.createOffer())  # gathers all candidates
        sdp: str = pc.localDescription.sdp
        return sdp

    async def accept(self, answer_sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    async def _consume(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        t0: list[int | None] = [None]
        video = track.kind == "video"
        audio = self._audio.get(track.id, self._audio["mix"])  # a stem's id is its name
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if video and self._video:
                    self._video.publish(video_frame(frame, t0))
                elif not video and audio:
                    audio.publish(audio_frame(frame, t0))
                elif t0[0] is None:
                    t0[0] = int(frame.pts or 0)

    async def close(self) -> None:
        """Close the peer connection (idempotent)."""
        pc, self.pc = self.pc, None
        if pc is not None:
            await pc.close()
