"""``unison-stream render``: generate a clip offline through the streaming engine, write an mp4.

The same path as a live session (``unison_stream/engine``): the planner times the text
(espeak-ng phoneme times, ``<tag>`` events in pauses), the engine's worker generates chunk by
chunk with the rolling KV cache and decodes them; render drains the session as fast as it can
(the engine's backpressure paces generation) and writes H.264 + AAC with PyAV. ``--audio``
renders the audio-driven mode: the given speech is held clean and returned unchanged as the
speech stem; the model makes motion and effects around it. ``--portrait PATH`` (a PNG, JPEG or
WebP of one front-facing face) or ``--design JSON`` (a character design) gives the session its
picture through :mod:`unison_stream.avatars` (``docs/avatars.md``) instead of ``--identity``.
``--stems`` also writes the mix and its two stems as WAVs beside the video (``out.wav``,
``out.speech.wav``, ``out.sfx.wav``), the stems at the mix's level so they sum to it
(``docs/stems.md``).

The clip holds the utterance's chunks (whole chunks covering the plan) plus ``tail_s`` of idle
chunks, so the file's duration is known from the plan before anything is generated.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from unison_stream.avatars import Avatar, AvatarError, from_design, from_upload
from unison_stream.config import MediaConfig, load_config
from unison_stream.engine import Engine, MediaChunk
from unison_stream.engine.audio import resample, split_mix
from unison_stream.media import write_mp4

__all__ = ["read_audio", "register", "render", "stem_paths"]

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
    portrait: Path | None = None,
    design: dict[str, Any] | None = None,
    stems: bool = False,
) -> Path:
    """Render ``text`` (inline ``<tags>``) or the speech in ``audio`` to ``out``; the person is
    world identity ``identity``, or the picture ``portrait``, or the character ``design``
    (an :class:`~unison_stream.avatars.AvatarError` when the picture or design is refused).
    ``stems``: also write the mix and its stems as WAVs (:func:`stem_paths`)."""
    with Engine(
        load_config(preset, overrides or []), checkpoint=checkpoint, max_sessions=1, max_ahead=4
    ) as engine:
        cfg = engine.cfg  # a checkpoint's own config wins over the preset
        cs = cfg.chunk_seconds()
        avatar = _avatar(cfg.media, portrait, design, caption=caption, seed=seed)
        if avatar is None:
            session = engine.open_session(identity=identity, caption=caption, seed=seed, hold=True)
        else:
            session = engine.open_session(
                reference_frame=avatar.picture, caption=avatar.caption, seed=avatar.seed, hold=True
            )
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
    if stems:
        _write_stems(out, chunks, cfg.media.sample_rate)
    return path


def stem_paths(out: Path) -> tuple[Path, Path, Path]:
    """The WAVs ``--stems`` writes beside ``out``: the mix, its speech, its effects."""
    return out.with_suffix(".wav"), out.with_suffix(".speech.wav"), out.with_suffix(".sfx.wav")


def _write_stems(out: Path, chunks: list[MediaChunk], rate: int) -> None:
    """The clip's mix and its stems at the mix's level (speech + sfx == mix) as 16-bit WAVs."""
    split = [split_mix(c.audio, c.speech, c.sfx) for c in chunks]
    mix = np.concatenate([c.audio for c in chunks])
    speech = np.concatenate([sp for sp, _ in split])
    sfx = np.concatenate([fx for _, fx in split])
    for path, pcm in zip(stem_paths(out), (mix, speech, sfx), strict=True):
        _write_wav(path, pcm, rate)
        log.info("wrote %s", path)


def _write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    """(S,) float mono in [-1, 1] → a 16-bit PCM WAV."""
    s16 = np.round(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(s16.tobytes())


def _avatar(
    media: MediaConfig,
    portrait: Path | None,
    design: dict[str, Any] | None,
    *,
    caption: str,
    seed: int,
) -> Avatar | None:
    """The avatar of ``--portrait`` or ``--design`` at the model's picture size, or None."""
    size = {"width": media.width, "height": media.height}
    if portrait is not None:
        return from_upload(portrait.read_bytes(), caption=caption, seed=seed, **size)
    if design is not None:
        return from_design(design, **size)
    return None


def _design(arg: str | None) -> dict[str, Any] | None:
    """``--design``: inline JSON, or the path of a JSON file."""
    if arg is None:
        return None
    text = arg if arg.lstrip().startswith("{") else Path(arg).read_text()
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"render: --design is not JSON ({e})") from e
    if not isinstance(spec, dict):
        raise SystemExit('render: --design is a JSON object, e.g. {"hair": "bob"}')
    return spec


def run(args: argparse.Namespace) -> int:
    if args.text is None and args.audio is None:
        raise SystemExit("render: give TEXT or --audio")
    if args.portrait and args.design:
        raise SystemExit("render: give --portrait or --design, not both")
    try:
        _render_args(args)
    except AvatarError as e:
        raise SystemExit(f"render: {e}") from e
    return 0


def _render_args(args: argparse.Namespace) -> None:
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
        portrait=Path(args.portrait) if args.portrait else None,
        design=_design(args.design),
        stems=args.stems,
    )


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
    p.add_argument(
        "--portrait",
        default=None,
        metavar="PATH",
        help="a PNG, JPEG or WebP of one front-facing face: the person (docs/avatars.md)",
    )
    p.add_argument(
        "--design",
        default=None,
        metavar="JSON",
        help='a character design, inline or a file: {"hair": "bob", "skin": "#6ab04c"}',
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument(
        "--stems",
        action="store_true",
        help="also write OUT.wav, OUT.speech.wav, OUT.sfx.wav: the mix and its stems",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], help="config overrides, e.g. sampler.steps=2"
    )
    p.set_defaults(func=run)
