"""Drive the streaming engine the way a client does, for evaluation (``docs/eval.md``).

Evaluation measures what the product streams: the engine's planner, model, decoders and mixer,
chunk by chunk. Each held-out clip gets its own session whose identity sink is the clip's first
frame (``Engine.open_session(reference_frame=…)``, encoded by the trained video codec, as
training builds its reference chunk) and whose caption is the clip's caption; the clip's
transcript (with its ``<tags>``) is said once and the utterance's chunks are collected
(:func:`say_one`; :func:`drive_one` gives the clip's speech instead: the audio-driven mode).
The long stream is one session saying sentences back to back. :class:`CodecRoundTrip` passes
ground-truth frames through the trained video codec (encode → decode), the ceiling of what a
model generating codec latents can show.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from unison_stream.config import UnisonConfig
from unison_stream.engine import Engine, EngineSession, MediaChunk

__all__ = [
    "CodecRoundTrip",
    "EvalStreamError",
    "Utterance",
    "drive_one",
    "next_chunk",
    "say_one",
    "stream",
]

log = logging.getLogger(__name__)
CHUNK_TIMEOUT_S = 120.0  # one chunk on a loaded 2-core box takes < 1 s; this means a hang


class EvalStreamError(RuntimeError):
    """The engine stopped delivering, or failed the utterance being evaluated."""


@dataclass
class Utterance:
    """One generated utterance: media from its first chunk on, and its planned contacts."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    speech: np.ndarray  # (S,) float32 generated speech stem
    sfx: np.ndarray  # (S,) float32 generated effects stem (zeros without one)
    mix: np.ndarray  # (S,) float32 what a client hears
    contacts: tuple[tuple[str, float], ...]  # (event class, planned contact s from the start)
    stems: bool = True  # False: a one-stream model (speech is the mix, sfx zeros)


def next_chunk(s: EngineSession) -> MediaChunk:
    """The session's next chunk; EvalStreamError on a stall or an utterance that failed."""
    c = s.next_chunk(timeout=CHUNK_TIMEOUT_S)
    if c is None:  # the stream's state says where it stopped (closed, never sunk, no room …)
        why = "closed" if s.closed else f"no chunk in {CHUNK_TIMEOUT_S:.0f} s"
        raise EvalStreamError(f"{why}: {s.describe()}")
    failed = [e for e in s.poll_events() if e.event == "failed"]
    if failed:
        raise EvalStreamError(f"utterance {failed[0].utterance_id} failed: {s.describe()}")
    return c


def say_one(
    engine: Engine,
    *,
    text: str,
    reference_frame: np.ndarray,
    caption: str,
    seed: int,
) -> Utterance:
    """Open a session on ``reference_frame``, say ``text``, return its utterance's media."""
    plan = engine.planner.plan(text)  # the plan the engine will make (same timing provider)
    n = plan.num_chunks(engine.cfg.chunk_seconds())
    s = engine.open_session(caption=caption, seed=seed, reference_frame=reference_frame, hold=True)
    try:
        s.say(text, utterance_id="eval")
        chunks = _collect(s, n)
    finally:
        s.close()
    return _utterance(chunks, plan.contacts)


def drive_one(
    engine: Engine,
    *,
    speech: np.ndarray,
    reference_frame: np.ndarray,
    caption: str,
    seed: int,
) -> Utterance:
    """The audio-driven mode: open a session on ``reference_frame``, give it ``speech`` (at the
    media rate) to hold clean, return the utterance's media (no planned contacts)."""
    cfg = engine.cfg
    per_chunk = cfg.chunk_seconds() * cfg.media.sample_rate
    n = math.ceil(len(speech) / per_chunk - 1e-9)  # the engine pads speech to whole chunks
    s = engine.open_session(caption=caption, seed=seed, reference_frame=reference_frame, hold=True)
    try:
        s.say_audio(speech, cfg.media.sample_rate, utterance_id="eval")
        chunks = _collect(s, n)
    finally:
        s.close()
    return _utterance(chunks, ())


def _collect(s: EngineSession, n: int) -> list[MediaChunk]:
    """The ``n`` chunks of utterance ``"eval"``, skipping idle chunks made before it (none
    on a held session: the eval opens its sessions with ``hold``, for the same chunks on every
    run)."""
    chunks: list[MediaChunk] = []
    skipped = 0
    while len(chunks) < n:
        c = next_chunk(s)
        if c.utterance_id == "eval":
            chunks.append(c)
        elif chunks:
            raise EvalStreamError(f"utterance ended after {len(chunks)} of {n} chunks")
        else:
            skipped += 1  # idle chunks made before the utterance was planned
            if skipped > 50:
                raise EvalStreamError("the utterance never started")
    return chunks


def _utterance(chunks: list[MediaChunk], contacts: tuple[tuple[str, float], ...]) -> Utterance:
    return Utterance(
        frames=np.concatenate([c.video for c in chunks]),
        speech=np.concatenate([c.speech if c.speech is not None else c.audio for c in chunks]),
        sfx=np.concatenate([c.sfx if c.sfx is not None else 0 * c.audio for c in chunks]),
        mix=np.concatenate([c.audio for c in chunks]),
        contacts=contacts,
        stems=chunks[0].sfx is not None,
    )


def stream(
    engine: Engine,
    *,
    texts: list[str],
    reference_frame: np.ndarray,
    caption: str,
    seconds: float,
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """``(F, H, W, 3)`` frames of one session saying ``texts`` in turn (cycled) for ``seconds``
    of media from the session's start."""
    assert texts, "the stream needs something to say"
    cs = engine.cfg.chunk_seconds()
    n = max(1, round(seconds / cs))
    queued, i = 0.0, 0
    plans = []
    while queued < seconds + 2 * cs:  # enough speech to fill the stream, without idle gaps
        text = texts[i % len(texts)]
        plans.append(text)
        queued += engine.planner.plan(text).duration_s
        i += 1
    s = engine.open_session(caption=caption, seed=seed, reference_frame=reference_frame, hold=True)
    frames = []
    try:
        for k, text in enumerate(plans):
            s.say(text, utterance_id=f"stream-{k}")
        for _ in tqdm(range(n), desc=f"{seconds:.0f} s stream", unit="chunk", disable=not progress):
            frames.append(next_chunk(s).video)
    finally:
        s.close()
    log.info("stream: %d chunks, %d utterances queued", n, len(plans))
    return np.concatenate(frames)


class CodecRoundTrip:
    """Ground-truth frames → the trained video codec's latents → frames, as the engine decodes
    them (one stream, carried decoder state). ``available`` is False without fitting weights.
    """

    def __init__(self, cfg: UnisonConfig) -> None:
        from unison_stream.codecs import weights
        from unison_stream.codecs.video import StreamingVideoDecoder, VideoAE

        ae = weights.load("video", cfg.latent, cfg.media)
        self.ae = ae if isinstance(ae, VideoAE) else None
        self.decoder = StreamingVideoDecoder(self.ae) if self.ae is not None else None
        self.stride = cfg.latent.video_time_stride
        if self.ae is None:
            log.warning("no trained video codec fits the config: no codec round trip")

    @property
    def available(self) -> bool:
        return self.ae is not None

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``(F, H, W, 3)`` uint8 → the same count of frames after encode → decode (the last
        frame is repeated up to a whole latent frame, and the extra frames dropped). The
        decoder's reference picture is the clip's first frame, as the engine's is the picture
        its session was opened with."""
        assert self.ae is not None and self.decoder is not None, "no video codec weights"
        f = len(frames)
        pad = -f % self.stride
        x = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)]) if pad else frames
        self.decoder.set_reference(frames[0])
        self.decoder.reset()
        z = self.ae.encode(torch.from_numpy(np.ascontiguousarray(x))[None])  # (1, F/s, C, h, w)
        return self.decoder.decode(z)[0, :f]
