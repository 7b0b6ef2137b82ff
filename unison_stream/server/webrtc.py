"""aiortc set-up shared by the server, the tests and the bench: loopback ICE, codec preferences.

Loopback only (``docs/server.md``): no ICE servers (the default would contact a public STUN server)
and host candidates restricted to 127.0.0.1. aioice skips loopback addresses when it lists the
host's interfaces; :func:`restrict_to_loopback` swaps that lookup for one that returns only
127.0.0.1. The swap is process-wide and idempotent.
"""

from __future__ import annotations

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCRtpSender, RTCRtpTransceiver

from unison_stream.server.config import ServerConfig

__all__ = ["prefer_codecs", "restrict_to_loopback", "rtc_configuration"]

_original_host_addresses = aioice.ice.get_host_addresses


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


def restrict_to_loopback(enabled: bool = True) -> None:
    """Make aioice gather only 127.0.0.1 host candidates (``enabled=False`` restores it)."""
    aioice.ice.get_host_addresses = _loopback_addresses if enabled else _original_host_addresses


def rtc_configuration(cfg: ServerConfig) -> RTCConfiguration:
    """The peer-connection configuration: no ICE servers when loopback only."""
    if cfg.loopback_only:
        restrict_to_loopback()
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
