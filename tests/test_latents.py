"""Latent datasets: a manifest encoded by the codecs, sampled into training windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import live_model, small_config
from unison_stream.cli import main
from unison_stream.config import load_config
from unison_stream.model.generator import CausalGenerator, PlanSlice
from unison_stream.training.latents import LatentShardSource
from unison_stream.vocab import EVENT_CLASSES, TRACK_VOCAB

espeak = pytest.importorskip("unison_stream.data.synth.speech")


@pytest.mark.slow
def test_prepare_and_sample_training_windows(tmp_path: Path) -> None:
    world, lat = tmp_path / "world", tmp_path / "latents"
    assert (
        main(["data", "synth", "--n", "6", "--out", str(world), "--seed", "3", "--workers", "1"])
        == 0
    )
    assert (
        main(["train", "prepare", "--manifest", str(world / "manifest.jsonl"), "--out", str(lat)])
        == 0
    )
    cfg = load_config("tiny")
    src = LatentShardSource(lat, cfg, batch=3, chunks=3, seed=0)
    b = src.next_batch()
    fc, nc, cs = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk(), cfg.chunk_seconds()
    assert b.video.shape == (3, 3 * fc, cfg.latent.video_channels, 16, 16)
    assert b.audio.shape == (3, 2, 3 * nc, cfg.latent.audio_channels)
    # the reference chunk repeats one frame and is silent
    assert torch.equal(b.video[:, 0], b.video[:, fc - 1])
    assert torch.equal(b.audio[:, :, 0], src.silence.expand(3, 2, -1))
    # the track lies in the window [chunk 1, chunk 3) up to token spans
    m = b.cond.track_mask
    assert bool(m.any())
    assert float(b.cond.track_end[m].min()) > cs - 1e-4
    assert float(b.cond.track_start[m].max()) < 3 * cs
    # normalisation statistics are present and sane
    assert set(src.stats) == {"video_shift", "video_scale", "audio_shift", "audio_scale"}
    assert bool((src.stats["audio_scale"] > 0).all())
    st = src.state()
    again = src.next_batch()
    src.restore(st)
    assert torch.equal(src.next_batch().video, again.video), "resumable position"
    # event-centred windows: every sequence holds a sound event inside its generated chunks
    assert src.events, "the synthetic world puts about one event in each clip"
    first_event = len(TRACK_VOCAB) - len(EVENT_CLASSES)

    def with_event(s: LatentShardSource) -> float:
        c = s.next_batch().cond
        hit = (c.track_ids >= first_event) & c.track_mask
        hit &= (c.track_start >= cs - 1e-4) & (c.track_start < 3 * cs)
        return float(hit.any(dim=1).float().mean())

    centred = LatentShardSource(lat, cfg, batch=32, chunks=3, seed=1, event_prob=1.0)
    assert with_event(centred) == 1.0
    uniform = LatentShardSource(lat, cfg, batch=32, chunks=3, seed=1)
    assert with_event(uniform) < 1.0, "uniform windows often miss the sparse events"
    # the one-stream ablation trains on the latents of the mix, with the mix's statistics
    one = load_config("tiny", ["model.ablation.split_audio=false"])
    mixed = LatentShardSource(lat, one, batch=3, chunks=3, seed=0)
    mb = mixed.next_batch()
    assert mb.audio.shape == (3, 1, 3 * nc, cfg.latent.audio_channels)
    assert not torch.equal(mixed.stats["audio_shift"], src.stats["audio_shift"])
    assert torch.equal(mb.video, b.video), "same windows, other audio"
    # the heard track (the speech front end's reading of the clip's speech) rides along and
    # replaces the true track only in the rows asked for
    assert b.heard is not None and b.tracks is not None and len(b.heard) == 3
    assert any(len(h) for h in b.heard), "the front end hears the world's speech"
    heard = b.hearing(torch.tensor([True, False, False]))
    n0, n1 = len(b.heard[0]), len(b.tracks[1])
    assert heard.cond.track_ids[0, :n0].tolist() == list(b.heard[0].ids)
    assert heard.cond.track_ids[1, :n1].tolist() == list(b.tracks[1].ids)
    assert b.hearing(torch.zeros(3, dtype=torch.bool)) is b
    # a generic caption (what a session opened without one runs on) replaces the clip's own
    from unison_stream.model.text import TextEncoder

    generic = LatentShardSource(
        lat, cfg, batch=3, chunks=3, seed=0, generic_caption_prob=1.0,
        generic_captions=("a person talking", "a person listening"),
    )  # fmt: skip
    gb = generic.next_batch()
    want = TextEncoder.shared().encode(["a person talking"])
    assert torch.allclose(gb.cond.caption_pooled, want.pooled.expand(3, -1))
    assert torch.equal(gb.video[0], b.video[0]), "the first window is drawn before its caption"


def test_generator_works_in_codec_space_with_normalised_model() -> None:
    cfg = small_config()
    model = live_model(cfg, std=0.1)
    with torch.no_grad():
        model.video_shift.fill_(3.0)
        model.video_scale.fill_(2.0)
        model.audio_shift.fill_(-1.0)
        model.audio_scale.fill_(0.5)
    x = torch.randn(2, 2, cfg.latent.video_channels, 8, 8)
    torch.testing.assert_close(model.denormalize_video(model.normalize_video(x)), x)
    from tests.helpers import random_cond

    h, w = cfg.latent.latent_hw(cfg.media)
    v = torch.randn(1, cfg.stream.chunk_latent_frames, cfg.latent.video_channels, h, w) * 2 + 3
    out = CausalGenerator(model).step(PlanSlice(cond=random_cond(cfg), clean_video=v))
    assert torch.equal(out.video, v), "clean latents come back bit-exact in codec space"
    assert abs(float(out.audio.mean()) + 1.0) < 1.0, (
        "generated audio is mapped back around the shift"
    )


def test_bundled_weights_load_only_when_the_architecture_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unison_stream.model import checkpoint

    cfg = small_config()
    model = live_model(cfg, std=0.1)
    monkeypatch.setattr(checkpoint, "BUNDLED_DIR", tmp_path)
    checkpoint.save_model(model, tmp_path / f"{cfg.preset}.safetensors")
    same = checkpoint.default_model(small_config("sampler.steps=2"))  # sampler may differ
    assert torch.equal(same.block(0).table_v, model.block(0).table_v)
    other = checkpoint.default_model(small_config("model.depth=1"))
    assert not torch.equal(other.block(0).table_v, model.block(0).table_v), "random when unfit"
