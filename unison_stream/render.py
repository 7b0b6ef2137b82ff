"""``unison-stream render``: generate a clip offline and write it as an mp4 (H.264 + AAC).

Decoders come from :func:`unison_stream.codecs.load_decoders`: the trained codecs when their
weights exist, else fixed preview decoders that show the latents (``codecs/preview.py``).

The transcript becomes a timed track with a letter-rate front end (one token per letter,
fixed durations, ``<tag>`` events as event tokens) until the duration predictor is trained.
Everything else — the text embeddings, the causal generator with its KV cache, the sampler —
is the real pipeline.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from unison_stream.codecs import load_decoders
from unison_stream.media import write_mp4
from unison_stream.model.checkpoint import load_model
from unison_stream.model.conditioning import Conditioning, TimedTrack
from unison_stream.model.dit import patchify
from unison_stream.model.generator import CausalGenerator, PlanSlice
from unison_stream.model.text import TextEncoder
from unison_stream.runtime import resolve_device, resolve_dtype
from unison_stream.vocab import SILENCE_ID, event_id, phoneme_id

__all__ = ["letters_track", "register", "render"]

log = logging.getLogger(__name__)

LETTER_S = 0.065  # seconds per letter of the letter-rate front end
SPACE_S = 0.05
EVENT_S = 0.30
_LETTER_PHONEME = dict(
    zip("abcdefghijklmnopqrstuvwxyz", "aIbsdEfgh@dZklmn0prstVvwksjz", strict=False)
)
_TAG = re.compile(r"<(\w+)>")


def letters_track(text: str, start_s: float = 0.0) -> tuple[TimedTrack, str]:
    """Letter-rate timed track for ``text`` and the transcript without tags."""
    ids: list[int] = []
    starts: list[float] = []
    t = start_s
    for piece in re.split(r"(<\w+>)", text):
        m = _TAG.fullmatch(piece)
        if m:
            ids.append(event_id(m.group(1)))
            starts.append(t)
            t += EVENT_S
            continue
        for ch in piece.lower():
            if ch.isalpha():
                ids.append(phoneme_id(_LETTER_PHONEME.get(ch, "@")))
                starts.append(t)
                t += LETTER_S
            elif ch.isspace() or ch in ",.;:!?":
                ids.append(SILENCE_ID)
                starts.append(t)
                t += SPACE_S
    ends = [*starts[1:], t]
    plain = " ".join(_TAG.sub(" ", text).split())
    return TimedTrack(tuple(ids), tuple(starts), tuple(ends)), plain


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
    tail_s: float = 0.5,
) -> Path:
    """Render ``text`` (inline ``<tags>`` allowed) to ``out``; returns the path."""
    model = load_model(checkpoint, preset=preset, overrides=overrides or [])
    cfg = model.cfg
    device = resolve_device(cfg.runtime)
    model = model.to(device=device, dtype=resolve_dtype(cfg.runtime, device))
    track, plain = letters_track(text)
    emb = TextEncoder.shared().encode([caption, plain])
    # identity: a seeded reference latent frame; it is the first chunk, so it becomes the sink
    h, w = cfg.latent.latent_hw(cfg.media)
    g = torch.Generator().manual_seed(identity)
    ref = torch.randn(1, 1, cfg.latent.video_channels, h, w, generator=g)
    base = Conditioning(
        caption_tokens=emb.tokens[:1],
        caption_mask=emb.mask[:1],
        caption_pooled=emb.pooled[:1],
        transcript_pooled=emb.pooled[1:],
        track_ids=torch.zeros(1, 1, dtype=torch.long),
        track_start=torch.zeros(1, 1),
        track_end=torch.zeros(1, 1),
        track_mask=torch.zeros(1, 1, dtype=torch.bool),
        identity=patchify(ref, cfg.latent.patch)[:, 0],
    )
    gen = CausalGenerator(model, seed=seed)
    cs = cfg.chunk_seconds()
    fc, nc = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk()
    silence = torch.zeros(1, cfg.audio_streams(), nc, cfg.latent.audio_channels)
    gen.step(PlanSlice(base, clean_video=ref.expand(1, fc, -1, -1, -1), clean_audio=silence))
    n_chunks = math.ceil((track.end[-1] if len(track) else 0.0) / cs + tail_s / cs)
    dec_v, dec_sp, dec_sfx = load_decoders(cfg)
    frames, audio = [], []
    for k in tqdm(range(1, n_chunks + 1), desc="render", unit="chunk"):
        t0 = (k - 1) * cs  # media time of this chunk (the identity chunk is not shown)
        window = track.window(t0, t0 + cs, cfg.model.track_window_s)
        chunk = gen.step(PlanSlice(base.with_tracks([window])))
        frames.append(dec_v.decode(chunk.video)[0])
        mix = dec_sp.decode(chunk.speech)[0]
        if chunk.sfx is not None:
            mix = mix + dec_sfx.decode(chunk.sfx)[0]
        audio.append(mix)
    path = write_mp4(
        out, np.concatenate(frames), cfg.media.fps, np.concatenate(audio), cfg.media.sample_rate
    )
    log.info("wrote %s: %.2f s, %d chunks of %.2f s", path, n_chunks * cs, n_chunks, cs)
    return path


def run(args: argparse.Namespace) -> int:
    render(
        args.text,
        Path(args.output),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        preset=args.preset,
        overrides=args.overrides,
        caption=args.caption,
        identity=args.identity,
        seed=args.seed,
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("render", help="render text (with <tags>) to an mp4 offline")
    p.add_argument("text", help='e.g. "Hello <wave> nice to see you <clap>"')
    p.add_argument("-o", "--output", default="out/render.mp4")
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
