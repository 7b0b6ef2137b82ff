"""A session's identity reference: the picture it is opened on, encoded by the trained video
codec into the latent frame its identity sink holds (``docs/engine.md``, "Opening a session";
``docs/avatars.md``, "The cached reference").

The picture comes from an :class:`~unison_stream.avatars.Avatar` — an upload, a design or the
synthetic world's portrait of an identity number: one path for all three. The codec pass is
the only cost here; an :class:`~unison_stream.avatars.AvatarStore` keeps its result
(:meth:`References.encode_numpy`) beside the picture with :meth:`References.fingerprint`, so a
stored avatar hands it back to ``open_session(reference=…)`` and skips the pass.

Where no trained codec fits the media size (test configs, ``serve --engine fake``) the sink is
a seeded random latent instead — the world identity's number for its portraits, else a digest
of the picture — and the picture is not shown (as it was for identities before avatars).
"""

from __future__ import annotations

import hashlib
import logging
import threading

import numpy as np
import torch

from unison_stream.avatars import Avatar
from unison_stream.codecs import CodecUnavailableError, VideoEncoder, load_encoders
from unison_stream.config import UnisonConfig

__all__ = ["References"]

log = logging.getLogger(__name__)


class References:
    """Encodes pictures into sink latents; thread-safe (``lock`` is shared with the engine's
    other stateful encoder, the speech encoder, as both are used one call at a time)."""

    def __init__(self, cfg: UnisonConfig, lock: threading.Lock) -> None:
        self.cfg, self._lock = cfg, lock
        self._encoder: VideoEncoder | None = None  # loaded on the first picture
        self._unavailable: CodecUnavailableError | None = None  # why none fits (asked once)
        self._fingerprint: str | None = None
        h, w = cfg.latent.latent_hw(cfg.media)
        self.shape = (1, 1, cfg.latent.video_channels, h, w)  # (1, 1, C, h, w)

    def check(self, frame: np.ndarray) -> None:
        """ValueError unless ``frame`` is ``(H, W, 3)`` uint8 at the media size."""
        m = self.cfg.media
        if frame.shape != (m.height, m.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"reference_frame must be ({m.height}, {m.width}, 3) uint8, "
                f"not {frame.shape} {frame.dtype}"
            )

    def encode(self, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 picture → (1, 1, C, h, w) codec latent: the frame held still for one
        latent frame (training's reference is a clip's first latent frame, two near-equal
        frames). CodecUnavailableError without fitting codec weights."""
        self.check(frame)
        with self._lock:
            if self._unavailable is not None:
                raise self._unavailable
            if self._encoder is None:
                try:
                    self._encoder = load_encoders(self.cfg)[0]
                except CodecUnavailableError as e:
                    self._unavailable = e
                    raise
            self._encoder.reset()
            still = np.repeat(frame[None, None], self.cfg.latent.video_time_stride, axis=1)
            with torch.inference_mode():
                lat = self._encoder.encode(still)[:, :1]  # (1, 1, C, h, w)
        return lat.float().cpu()

    def encode_numpy(self, frame: np.ndarray) -> np.ndarray | None:
        """:meth:`encode` as float32 numpy for a store to keep; None without a codec."""
        try:
            return self.encode(frame).numpy().astype(np.float32)
        except CodecUnavailableError:
            return None

    def fingerprint(self) -> str:
        """Names this codec and media size: the latent of a fixed test picture, hashed ("" with
        no codec). A cached reference made under another fingerprint is not used."""
        if self._fingerprint is None:
            m = self.cfg.media
            ramp = np.linspace(0, 255, m.width * m.height * 3) % 256
            probe = ramp.reshape(m.height, m.width, 3).astype(np.uint8)
            lat = self.encode_numpy(probe)
            digest = "" if lat is None else hashlib.sha256(np.round(lat, 3).tobytes()).hexdigest()
            self._fingerprint = f"{m.width}x{m.height}:{digest[:16]}" if digest else ""
        return self._fingerprint

    def sink(
        self, avatar: Avatar, *, cached: np.ndarray | None = None
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """The sink latent ``(1, 1, C, h, w)`` of ``avatar`` and the picture the replica's
        decoder reads (None when the latent is the seeded stand-in of a codec-less engine).
        ``cached``: the latent a store kept for this picture; used when its shape fits."""
        self.check(avatar.picture)
        if cached is not None:
            if tuple(cached.shape) == self.shape:
                return torch.from_numpy(np.asarray(cached, np.float32)), avatar.picture
            log.warning("cached reference %s does not fit %s: encoding", cached.shape, self.shape)
        try:
            return self.encode(avatar.picture), avatar.picture
        except CodecUnavailableError:
            pass
        number = avatar.provenance.get("identity")
        if not isinstance(number, int):
            number = int.from_bytes(hashlib.sha256(avatar.picture.tobytes()).digest()[:4], "big")
        g = torch.Generator().manual_seed(number)
        return torch.randn(*self.shape, generator=g), None
