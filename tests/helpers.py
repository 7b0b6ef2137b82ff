"""Small builders shared by the model tests: a fast config, live random weights, inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unison_stream.config import UnisonConfig, load_config
from unison_stream.engine import EngineSession, MediaChunk
from unison_stream.model.conditioning import Conditioning, TimedTrack
from unison_stream.model.dit import UnisonDiT

# A model small enough for a test to run it many times in a second on 2 cores, with every
# component of the real one: 64×64 frames → 8×8 latent → 16 tokens per frame, chunks of
# 2 latent frames (0.16 s, 4 audio latents per sub-stream).
TEST_OVERRIDES = [
    "media.width=64",
    "media.height=64",
    "model.width=64",
    "model.depth=2",
    "model.heads=2",
    "model.scg_hidden=16",
    "latent.video_channels=4",
    "latent.audio_channels=8",
    "stream.chunk_latent_frames=2",
    "stream.window_chunks=8",
    "model.track_window_s=0.1",
]


def small_config(*extra: str) -> UnisonConfig:
    return load_config("tiny", [*TEST_OVERRIDES, *extra])


def live_model(cfg: UnisonConfig, seed: int = 0, std: float = 0.2) -> UnisonDiT:
    """A model whose every parameter is random (zero-initialised paths opened), in eval mode.

    The real initialisation closes gates on purpose; tests that prove a path exists or is cut
    need every path live.
    """
    torch.manual_seed(seed)
    model = UnisonDiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


@dataclass
class Inputs:
    video: Tensor  # (B, F, P, Cv·p²)
    audio: Tensor  # (B, S, N, Ca)
    t_video: Tensor  # (B, F)
    t_audio: Tensor  # (B, S, N)
    cond: Conditioning
    track: TimedTrack


def make_track(seconds: float, seed: int = 0) -> TimedTrack:
    g = torch.Generator().manual_seed(seed)
    ids, start, end, t = [], [], [], 0.0
    while t < seconds:
        dur = 0.03 + 0.09 * float(torch.rand((), generator=g))
        ids.append(3 + int(torch.randint(0, 60, (), generator=g)))
        start.append(round(t, 4))
        end.append(round(t + dur, 4))
        t += dur
    return TimedTrack(tuple(ids), tuple(start), tuple(end))


def random_cond(cfg: UnisonConfig, batch: int = 1, seed: int = 0) -> Conditioning:
    return Conditioning.random(
        batch,
        text_dim=cfg.model.text_dim,
        caption_len=5,
        identity_shape=(cfg.tokens_per_frame(), cfg.latent.video_token_dim()),
        generator=torch.Generator().manual_seed(seed),
    )


def make_inputs(cfg: UnisonConfig, chunks: int, batch: int = 1, seed: int = 0) -> Inputs:
    """Random tokens, random per-token timesteps and a dense track over ``chunks`` chunks."""
    g = torch.Generator().manual_seed(seed)
    f = chunks * cfg.stream.chunk_latent_frames
    n = chunks * cfg.audio_frames_per_chunk()
    s = cfg.audio_streams()
    track = make_track(chunks * cfg.chunk_seconds(), seed)
    cond = random_cond(cfg, batch, seed).with_tracks([track] * batch)
    return Inputs(
        video=torch.randn(
            batch, f, cfg.tokens_per_frame(), cfg.latent.video_token_dim(), generator=g
        ),
        audio=torch.randn(batch, s, n, cfg.latent.audio_channels, generator=g),
        t_video=torch.rand(batch, f, generator=g),
        t_audio=torch.rand(batch, s, n, generator=g),
        cond=cond,
        track=track,
    )


def stream_chunks(model: UnisonDiT, inp: Inputs, chunks: int) -> tuple[Tensor, Tensor]:
    """Run ``inp`` one chunk at a time through a fresh cache (each chunk committed as given)."""
    cfg = model.cfg
    fc, nc, cs = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk(), cfg.chunk_seconds()
    cache = model.new_cache(inp.video.shape[0])
    outs_v, outs_a = [], []
    for k in range(chunks):
        sv, sa = slice(k * fc, (k + 1) * fc), slice(k * nc, (k + 1) * nc)
        window = inp.track.window(k * cs, (k + 1) * cs, cfg.model.track_window_s)
        cond = inp.cond.with_tracks([window] * inp.video.shape[0])
        ov, oa = model.forward_chunk(
            inp.video[:, sv],
            inp.audio[:, :, sa],
            inp.t_video[:, sv],
            inp.t_audio[:, :, sa],
            cond,
            cache=cache,
            chunk_index=k,
            write=True,
        )
        outs_v.append(ov)
        outs_a.append(oa)
    return torch.cat(outs_v, dim=1), torch.cat(outs_a, dim=2)


def take(s: EngineSession, n: int, timeout: float = 60.0) -> list[MediaChunk]:
    """The session's next ``n`` chunks; fails the test if the stream stalls."""
    out = []
    for _ in range(n):
        c = s.next_chunk(timeout=timeout)
        assert c is not None, "the stream stalled"
        out.append(c)
    return out
