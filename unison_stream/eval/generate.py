"""Drive the streaming engine the way a client does, for evaluation (issue 5).

Evaluation measures what the product streams: the engine's planner, model, decoders and mixer,
chunk by chunk. Each held-out clip gets its own session whose identity sink is the clip's first
frame (``Engine.open_session(reference_frame=…)``, encoded by the trained video codec, as
training builds its reference chunk) and whose caption is the clip's caption; the clip's
transcript (with its ``<tags>``) is said once and the utterance's chunks are collected. The
long stream is one session saying sentences back to back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from unison_stream.engine import Engine, EngineSession, MediaChunk

__all__ = ["EvalStreamError", "Utterance", "say_one", "stream"]

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


def _next(s: EngineSession) -> MediaChunk:
    c = s.next_chunk(timeout=CHUNK_TIMEOUT_S)
    if c is None:
        raise EvalStreamError(f"session {s.session_id}: no chunk in {CHUNK_TIMEOUT_S:.0f} s")
    failed = [e for e in s.poll_events() if e.event == "failed"]
    if failed:
        raise EvalStreamError(f"session {s.session_id}: utterance {failed[0].utterance_id} failed")
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
    s = engine.open_session(caption=caption, seed=seed, reference_frame=reference_frame)
    try:
        s.say(text, utterance_id="eval")
        chunks: list[MediaChunk] = []
        skipped = 0
        while len(chunks) < n:
            c = _next(s)
            if c.utterance_id == "eval":
                chunks.append(c)
            elif chunks:
                raise EvalStreamError(f"utterance ended after {len(chunks)} of {n} chunks")
            else:
                skipped += 1  # idle chunks made before the utterance was planned
                if skipped > 50:
                    raise EvalStreamError("the utterance never started")
    finally:
        s.close()
    return Utterance(
        frames=np.concatenate([c.video for c in chunks]),
        speech=np.concatenate([c.speech if c.speech is not None else c.audio for c in chunks]),
        sfx=np.concatenate([c.sfx if c.sfx is not None else 0 * c.audio for c in chunks]),
        mix=np.concatenate([c.audio for c in chunks]),
        contacts=plan.contacts,
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
    s = engine.open_session(caption=caption, seed=seed, reference_frame=reference_frame)
    frames = []
    try:
        for k, text in enumerate(plans):
            s.say(text, utterance_id=f"stream-{k}")
        for _ in tqdm(range(n), desc=f"{seconds:.0f} s stream", unit="chunk", disable=not progress):
            frames.append(_next(s).video)
    finally:
        s.close()
    log.info("stream: %d chunks, %d utterances queued", n, len(plans))
    return np.concatenate(frames)
