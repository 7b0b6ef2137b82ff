"""``unison-stream render``: generate a clip offline through the streaming engine, write an mp4.

The same path as a live session (``unison_stream/engine``): the planner times the text
(espeak-ng phoneme times, ``<tag>`` events in pauses), the engine's worker generates chunk by
chunk with the rolling KV cache and decodes them; render drains the session as fast as it can
(the engine's backpressure paces generation) and writes H.264 + AAC with PyAV. ``--audio``
renders the audio-driven mode: the given speech is held clean and returned unchanged as the
speech stem; the model makes motion and effects around it.

The clip holds the utterance's chunks (whole chunks covering the plan) plus ``tail_s`` of idle
chunks, so the file's duration is known from the plan before anything is generated.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from unison_stream.config import load_config
from unison_stream.engine import Engine, MediaChunk
from unison_stream.engine.audio import resample
from unison_stream.media import write_mp4

__all__ = ["read_audio", "register", "render"]

log = logging.getLogger(__name__)
UTTERANCE_ID = "render"


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode an audio file (any format PyAV reads) to mono float32 at its own sample rate."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            raise ValueError(f"{path}: no audio stream")
        stream = c.streams.audio[0]
        rate = int(stream.sample_rate or 0)
        to_mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
        blocks = [r.to_ndarray().reshape(-1) for f in c.decode(stream) for r in to_mono.resample(f)]
        blocks += [r.to_ndarray().reshape(-1) for r in to_mono.resample(None)]
    if not blocks:
        raise ValueError(f"{path}: empty audio")
    return np.concatenate(blocks).astype(np.float32), rate


def render(
    text: str,
    out: Path,
    *,
    checkpoint: Path | None = None,
    preset: str = "tiny",
    overrides: list[str] | None = None,
    caption: str = "a person talking in a quiet room",
    identity: int = 0,
    seed: int = 0,
    audio: Path | None = None,
    tail_s: float = 0.5,
) -> Path:
    """Render ``text`` (inline ``<tags>``) or the speech in ``audio`` to ``out``."""
    with Engine(
        load_config(preset, overrides or []), checkpoint=checkpoint, max_sessions=1, max_ahead=4
    ) as engine:
        cfg = engine.cfg  # a checkpoint's own config wins over the preset
        cs = cfg.chunk_seconds()
        session = engine.open_session(identity=identity, caption=caption, seed=seed)
        if audio is not None:
            pcm, rate = read_audio(audio)
            speech = resample(pcm, rate, cfg.media.sample_rate)
            session.say_audio(speech, cfg.media.sample_rate, utterance_id=UTTERANCE_ID)
            n_utt = math.ceil(len(speech) / (cs * cfg.media.sample_rate) - 1e-9)
        else:
            n_utt = engine.planner.plan(text).num_chunks(cs)
            session.say(text, utterance_id=UTTERANCE_ID)
        n_tail = math.ceil(tail_s / cs - 1e-9)
        chunks: list[MediaChunk] = []
        with tqdm(total=n_utt + n_tail, desc="render", unit="chunk") as bar:
            while len(chunks) < n_utt + n_tail:
                c = session.next_chunk(timeout=120.0)
                if c is None:
                    raise RuntimeError("render: the engine produced no chunk for 120 s")
                if not chunks and c.utterance_id != UTTERANCE_ID:
                    continue  # idle chunks made before the utterance started
                chunks.append(c)
                bar.update(1)
        errors = session.stats()["errors"]
        if errors:
            raise RuntimeError(f"render: {errors:.0f} chunk(s) failed; see the log")
    frames = np.concatenate([c.video for c in chunks])
    mix = np.concatenate([c.audio for c in chunks])
    path = write_mp4(out, frames, cfg.media.fps, mix, cfg.media.sample_rate)
    log.info("wrote %s: %.2f s, %d chunks of %.2f s", path, len(chunks) * cs, len(chunks), cs)
    return path


def run(args: argparse.Namespace) -> int:
    if args.text is None and args.audio is None:
        raise SystemExit("render: give TEXT or --audio")
    render(
        args.text or "",
        Path(args.output),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        preset=args.preset,
        overrides=args.overrides,
        caption=args.caption,
        identity=args.identity,
        seed=args.seed,
        audio=Path(args.audio) if args.audio else None,
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("render", help="render text (with <tags>) or speech to an mp4 offline")
    p.add_argument("text", nargs="?", help='e.g. "Hello <wave> nice to see you <clap>"')
    p.add_argument("-o", "--output", default="out/render.mp4")
    p.add_argument("--audio", default=None, help="speech file: audio-driven mode")
    p.add_argument(
        "--checkpoint", default=None, help="safetensors checkpoint (default: random weights)"
    )
    p.add_argument("--preset", default="tiny")
    p.add_argument("--caption", default="a person talking in a quiet room")
    p.add_argument("--identity", type=int, default=0, help="identity seed")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument(
        "overrides", nargs="*", default=[], help="config overrides, e.g. sampler.steps=2"
    )
    p.set_defaults(func=run)
