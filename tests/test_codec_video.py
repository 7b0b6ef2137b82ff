"""Video codec: shapes and protocol, chunked == full decode, learning, weights, training resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from unison_stream.codecs import CodecUnavailableError, load_decoders, load_encoders, metrics
from unison_stream.codecs import weights as cw
from unison_stream.codecs.config import VideoCodecConfig
from unison_stream.codecs.preview import PreviewVideoDecoder
from unison_stream.codecs.video import StreamingVideoDecoder, VideoAE, VideoEncoderStream
from unison_stream.config import LatentConfig, MediaConfig, load_config
from unison_stream.training.codec_config import CodecTrainConfig

SMALL = VideoCodecConfig(widths=(8, 16, 32), blocks=1, temporal_context=1)


def _frames(n: int, seed: int = 0, size: int = 128) -> np.ndarray:
    """Smooth procedural frames: a gradient background and a moving coloured disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    base = rng.uniform(0.2, 0.8, 3)
    col = rng.uniform(0, 1, 3)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    for t in range(n):
        img = base[None, None] * (0.6 + 0.4 * xx[..., None]) * (0.7 + 0.3 * yy[..., None])
        disc = ((xx - cx - 0.01 * t) ** 2 + (yy - cy) ** 2) < 0.04
        img[disc] = col
        out[t] = (img * 255).astype(np.uint8)
    return out


def test_shapes_and_protocol():
    torch.manual_seed(0)
    ae = VideoAE(SMALL, LatentConfig())
    enc, dec = VideoEncoderStream(ae), StreamingVideoDecoder(ae)
    z = enc.encode(_frames(8)[None])
    assert z.shape == (1, 4, 8, 16, 16) and z.dtype == torch.float32
    y = dec.decode(z)
    assert y.shape == (1, 8, 128, 128, 3) and y.dtype == np.uint8
    with pytest.raises(AssertionError, match="multiple of video_time_stride"):
        enc.encode(_frames(3)[None])


def test_chunked_decode_equals_full_decode():
    torch.manual_seed(0)
    ae = VideoAE(VideoCodecConfig(), LatentConfig()).eval()
    z = torch.randn(2, 9, 8, 16, 16)
    dec = StreamingVideoDecoder(ae)
    full = dec.decode(z)
    for sizes in ((4, 4, 1), (1, 2, 3, 3), (9,)):
        dec.reset()
        parts, at = [], 0
        for n in sizes:
            parts.append(dec.decode(z[:, at : at + n]))
            at += n
        chunked = np.concatenate(parts, 1)
        diff = np.abs(chunked.astype(int) - full.astype(int))
        assert diff.max() <= 1, f"chunks {sizes}: max |Δ| {diff.max()} (uint8 rounding only)"
        assert (diff > 0).mean() < 1e-3


def test_decoder_uses_carried_state():
    """The previous latent frame changes the next frames' decode (state is really carried)."""
    torch.manual_seed(0)
    ae = VideoAE(VideoCodecConfig(), LatentConfig()).eval()
    z = torch.randn(1, 2, 8, 16, 16)
    dec = StreamingVideoDecoder(ae)
    dec.decode(z[:, :1])
    after_history = dec.decode(z[:, 1:])
    dec.reset()
    fresh = dec.decode(z[:, 1:])
    assert np.abs(after_history.astype(int) - fresh.astype(int)).max() > 0


def test_reference_decoder_starts_as_the_decoder_and_then_reads_the_picture():
    """A reference-reading decoder starts equal to the decoder without one (zero-initialised
    path), its decode follows the picture once the path is open, chunked decode still equals
    full decode, and a reset keeps the picture."""
    torch.manual_seed(0)
    ae = VideoAE(VideoCodecConfig(reference=True), LatentConfig()).eval()
    z = torch.randn(1, 5, 8, 16, 16)
    pic_a, pic_b = _frames(1, seed=1)[0], _frames(1, seed=2)[0]
    dec = StreamingVideoDecoder(ae)
    plain = dec.decode(z)
    dec.reset()
    dec.set_reference(pic_a)
    assert np.array_equal(dec.decode(z), plain), "a fresh reference path must add nothing"
    assert ae.ref_out is not None and ae.ref_global is not None
    with torch.no_grad():
        ae.ref_out.weight.normal_(0, 0.2)
        ae.ref_global.weight.normal_(0, 0.2)
    dec.set_reference(pic_a)  # features are computed here, once per stream
    dec.reset()
    with_a = dec.decode(z)
    dec.set_reference(pic_b)
    dec.reset()
    with_b = dec.decode(z)
    assert np.abs(with_a.astype(int) - with_b.astype(int)).mean() > 1, "picture ignored"
    dec.set_reference(pic_a)
    dec.reset()
    chunked = np.concatenate([dec.decode(z[:, :2]), dec.decode(z[:, 2:])], 1)
    assert np.abs(chunked.astype(int) - with_a.astype(int)).max() <= 1
    dec.reset()
    with pytest.raises(ValueError, match="reference for batch 1"):
        dec.decode(torch.randn(2, 1, 8, 16, 16))
    dec.set_reference(None)
    dec.reset()
    assert np.array_equal(dec.decode(z), plain)


def test_reference_attention_starts_closed_and_looks_only_near_each_place():
    """The look-up adds nothing until trained; once open, the decode follows the picture
    through it, chunked decode still equals full decode, and a change of the picture far
    from a place (beyond the window and the layers around it) leaves that place's decode
    alone."""
    torch.manual_seed(0)
    ae = VideoAE(VideoCodecConfig(reference=True, reference_attention=True), LatentConfig())
    ae.eval()
    z = torch.randn(1, 4, 8, 16, 16)
    pic = _frames(1, seed=1)[0]
    dec = StreamingVideoDecoder(ae)
    plain = dec.decode(z)
    dec.set_reference(pic)
    dec.reset()
    assert np.array_equal(dec.decode(z), plain), "a closed look-up must add nothing"
    assert ae.ref_attn is not None
    with torch.no_grad():
        ae.ref_attn.out.weight.normal_(0, 1.0)  # only the look-up is open (ref_out stays 0)
    dec.set_reference(pic)
    dec.reset()
    with_pic = dec.decode(z)
    assert np.abs(with_pic.astype(int) - plain.astype(int)).mean() > 0.5, "look-up ignored"
    dec.reset()
    chunked = np.concatenate([dec.decode(z[:, :1]), dec.decode(z[:, 1:])], 1)
    assert np.abs(chunked.astype(int) - with_pic.astype(int)).max() <= 1
    corner = pic.copy()
    corner[:16, :16] = 255 - corner[:16, :16]  # the picture's top-left corner changed
    dec.set_reference(corner)
    dec.reset()
    moved = dec.decode(z).astype(int) - with_pic.astype(int)
    assert np.abs(moved[:, :, :24, :24]).max() > 0, "the corner's own place must follow it"
    assert np.abs(moved[:, :, 64:, 64:]).max() == 0, "a far place read the changed corner"


def test_reference_crops_share_the_window_and_the_clip():
    from unison_stream.codecs.data import ClipStore

    frames = np.concatenate([np.full((6, 32, 32, 3), 10 * c, np.uint8) for c in (1, 2, 3)])
    frames[:, :, :, 1] = np.arange(32, dtype=np.uint8)[None, :, None]  # x position in green
    store = ClipStore(frames, np.array([0, 6, 12, 18]), {}, np.zeros(4, np.int64), [{}] * 3)
    rng = np.random.default_rng(0)
    crops, refs, eyes, mouth = store.video_crops_with_reference(rng, 20, 4, 16, 2)
    assert eyes.shape == (20, 16, 16) and not eyes.any(), "no identity cached: no eyes"
    assert mouth.shape == (20, 16, 16) and not mouth.any(), "… and no mouth"
    assert crops.shape == (20, 4, 16, 16, 3) and refs.shape == (20, 16, 16, 3)
    assert np.array_equal(refs[..., 0], crops[:, 0, ..., 0]), "the reference is of the same clip"
    assert np.array_equal(refs[..., 1], crops[:, 0, ..., 1]), "… and the same window"


def test_detail_weights_lift_a_small_part_and_leave_flat_areas_at_one():
    from unison_stream.training.codec_losses import detail_weights as _detail_weights

    x = torch.full((1, 2, 16, 16, 3), 0.5)
    torch.testing.assert_close(_detail_weights(x, 4.0), torch.ones(1, 2, 16, 16, 1))
    x[:, :, 7:9, 7:9] = torch.tensor([0.1, 0.6, 0.2])  # a 2-pixel "iris"
    w = _detail_weights(x, 4.0)
    assert w.shape == (1, 2, 16, 16, 1)
    assert float(w[0, 0, 7, 7]) > 5 and float(w[0, 0, 0, 0]) == 1.0


def test_blurred_eye_loss_prefers_a_ring_a_pixel_off_to_no_ring():
    """Per-pixel L1 rates a 1-pixel ring drawn a pixel off worse than no ring at all (it
    misses twice); the blurred L1 inside the eye mask rates it better, and sees nothing
    outside the mask."""
    from unison_stream.training.codec_losses import blurred_l1 as _blurred_l1

    white = torch.full((1, 1, 16, 16, 3), 0.95)
    truth, off, none = white.clone(), white.clone(), white.clone()
    green = torch.tensor([0.25, 0.5, 0.3])
    truth[:, :, 4:12, 8] = green  # the iris ring, one pixel wide
    off[:, :, 4:12, 9] = green  # the same, a pixel to the right
    mask = torch.zeros(1, 1, 16, 16, 1)
    mask[:, :, 2:14, 4:13] = 1.0
    assert (off - truth).abs().mean() > (none - truth).abs().mean()
    assert _blurred_l1(off, truth, mask) < 0.6 * _blurred_l1(none, truth, mask)
    elsewhere = truth.clone()
    elsewhere[:, :, :, 0] = 0.0  # a change beyond the blur's reach of the mask
    assert float(_blurred_l1(elsewhere, truth, mask)) == 0.0


def test_sharpness_loss_prefers_a_steep_edge_a_pixel_off_to_a_soft_one_in_place():
    """L1 of pixels and of their differences rate a step spread over 3 pixels, in place, better
    than the same step drawn steep a pixel off — the blur a decoder learns where the latents
    place an edge only to a pixel. The local-RMS-gradient loss rates them the other way round,
    charges a flat frame most, a copy nothing, and texture where the truth is flat."""
    from unison_stream.training.codec_losses import edge_l1 as _edge_l1
    from unison_stream.training.codec_losses import sharpness_l1 as _sharpness_l1

    truth = torch.zeros(1, 1, 16, 16, 3)
    truth[:, :, 8:] = 1.0  # a horizontal edge
    off = torch.zeros_like(truth)
    off[:, :, 9:] = 1.0  # as steep, a pixel lower
    soft = truth.clone()
    soft[:, :, 7], soft[:, :, 8] = 1 / 3, 2 / 3  # in place, over three pixels
    assert (soft - truth).abs().mean() < (off - truth).abs().mean()
    assert _edge_l1(soft, truth) < _edge_l1(off, truth)
    assert _sharpness_l1(off, truth) < 0.9 * _sharpness_l1(soft, truth)
    assert _sharpness_l1(soft, truth) < _sharpness_l1(torch.full_like(truth, 0.5), truth)
    assert float(_sharpness_l1(truth, truth)) == 0.0
    flat = torch.full_like(truth, 0.5)
    checker = flat.clone()
    checker[:, :, ::2, ::2] += 0.1  # texture the truth does not have
    assert float(_sharpness_l1(checker, flat)) > 0.01


def test_round_trip_improves_with_training():
    torch.manual_seed(0)
    ae = VideoAE(SMALL, LatentConfig())
    x = torch.from_numpy(np.stack([_frames(2, seed=s, size=64) for s in range(4)])).float() / 255

    def score() -> float:
        with torch.no_grad():
            return float(metrics.psnr(ae.decode(ae.encode(x)).clamp(0, 1), x).mean())

    before = score()
    opt = torch.optim.Adam(ae.parameters(), 3e-3)
    for _ in range(30):
        loss = (ae.decode(ae.encode(x)) - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = score()
    assert after > before + 3, f"PSNR {before:.1f} → {after:.1f} dB"


def test_weights_export_load_and_mismatch(tmp_path: Path):
    torch.manual_seed(0)
    lat, media = LatentConfig(), MediaConfig()
    ae = VideoAE(SMALL, lat)
    cw.export(ae, "video", lat, media, {"note": "test"}, root=tmp_path)
    assert (tmp_path / "video.yaml").exists()
    assert json.loads((tmp_path / "video_train.json").read_text()) == {"note": "test"}
    back = cw.load("video", lat, media, root=tmp_path)
    assert isinstance(back, VideoAE) and tuple(back.cfg.widths) == SMALL.widths
    for k, v in ae.state_dict().items():  # stored in fp16
        torch.testing.assert_close(back.state_dict()[k], v.half().float())
    assert cw.load("video", LatentConfig(video_channels=4), media, root=tmp_path) is None


def test_load_decoders_falls_back_to_preview(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    cfg = load_config("tiny")
    with caplog.at_level(logging.INFO, logger="unison_stream.codecs"):
        video, _, _ = load_decoders(cfg, weights_dir=tmp_path)
    assert isinstance(video, PreviewVideoDecoder)
    assert "preview" in caplog.text
    with pytest.raises(CodecUnavailableError, match="train codec"):
        load_encoders(cfg, weights_dir=tmp_path)


@pytest.mark.skipif(not cw.weights_path("video").exists(), reason="no bundled video weights")
def test_bundled_video_codec_round_trip():
    cfg = load_config("tiny")
    video, _, _ = load_decoders(cfg)
    assert isinstance(video, StreamingVideoDecoder)
    enc, _ = load_encoders(cfg)
    x = _frames(8, seed=3)
    y = video.decode(enc.encode(x[None]))[0]
    p = float(metrics.psnr(torch.from_numpy(y).float() / 255, torch.from_numpy(x).float() / 255)
              .mean())  # fmt: skip
    assert p > 22, f"bundled codec PSNR {p:.1f} dB on simple frames"


def _fake_cache(root: Path) -> None:
    """A two-clip cache in the codec data format (no speech synthesis needed)."""
    for split in ("train", "val"):
        frames = np.concatenate([_frames(8, seed=s) for s in range(2)])
        audio = np.random.default_rng(0).standard_normal(2 * 8 * 640).astype(np.float32) * 0.1
        f_off, a_off = np.array([0, 8, 16]), np.array([0, 5120, 10240])
        path = root / f"{split}.npz"
        np.savez(path, frames=frames, frame_off=f_off, audio_off=a_off, speech=audio, sfx=audio,
                 mix=audio)  # fmt: skip
        (root / f"{split}.json").write_text(json.dumps([{"sentence": "a"}, {"sentence": "b"}]))
    (root / "test.npz").write_bytes((root / "val.npz").read_bytes())


@pytest.mark.parametrize(("adv_weight", "reference"), [(0.0, False), (0.5, True)])
def test_training_resumes_exactly(tmp_path: Path, adv_weight: float, reference: bool):
    from safetensors.torch import load_file

    from unison_stream.training.codec import train

    _fake_cache(tmp_path)

    def cfg(out: str) -> CodecTrainConfig:
        return CodecTrainConfig(kind="video", steps=4, batch=2, crop=32, clip_latents=2,
                                val_every=2, ckpt_every=2, warmup=1, data_dir=str(tmp_path),
                                out_dir=str(tmp_path / out), losses={"adv": adv_weight},
                                adv_start=1, video_reference=reference,
                                video_reference_attention=reference)  # fmt: skip

    train(cfg("a"), export=False)
    train(cfg("b"), export=False, stop_at=2)
    train(cfg("b"), export=False)  # resumes from the step-2 checkpoint
    a = load_file(str(tmp_path / "a" / "video" / "ckpt.safetensors"))
    b = load_file(str(tmp_path / "b" / "video" / "ckpt.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")
    assert (tmp_path / "a" / "video" / "loss.png").exists()
    # the discriminator and its moments travel with the codec's (resume needs both)
    assert any(k.startswith("disc.") for k in a) == (adv_weight > 0)
    assert any(k.startswith("discopt.") for k in a) == (adv_weight > 0)
    assert any(k.startswith("model.ref_out.") for k in a) == reference
    assert any(k.startswith("model.ref_attn.") for k in a) == reference
    if reference:  # the new paths left their zero start
        assert float(a["model.ref_out.weight"].abs().max()) > 0
        assert float(a["model.ref_attn.out.weight"].abs().max()) > 0


def test_adversarial_term_trains_the_decoder_only_and_scores_decoded_frames_lower():
    """With the encoder frozen the adversarial gradient reaches the decoder, never the encoder;
    a few critic steps separate real frames from a blurred decoder's."""
    from unison_stream.training.codec_discriminator import to_nchw
    from unison_stream.training.codec_losses import Adversary

    torch.manual_seed(0)
    ae = VideoAE(SMALL, LatentConfig())
    for name, p in ae.named_parameters():
        p.requires_grad_(not name.startswith("enc"))
    adv = Adversary(ae, CodecTrainConfig(losses={"adv": 0.5}, disc_lr=2e-3, disc_width=8))
    x = torch.from_numpy(np.stack([_frames(2, seed=s, size=32) for s in range(4)])).float() / 255
    y = ae.decode(ae.encode(x))
    rec = (y - x).abs().mean()
    term, parts = adv.generator_term(rec, y)
    (rec + term).backward()
    assert parts["lambda"] > 0
    assert all(p.grad is None for n, p in ae.named_parameters() if n.startswith("enc"))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.dec.parameters())
    assert all(p.grad is None for p in adv.disc.parameters())  # the critic is not the trainee
    for _ in range(30):
        adv.critic_step(y.detach(), x)
    with torch.no_grad():
        real, fake = adv.disc(to_nchw(x)).mean(), adv.disc(to_nchw(y)).mean()
    assert real > fake + 0.5, f"critic: real {real:.2f}, decoded {fake:.2f}"


def test_eye_mask_covers_the_layouts_eyes_and_nothing_far_from_them():
    from unison_stream.codecs.data import ClipStore
    from unison_stream.data.synth.face import face_layout
    from unison_stream.data.synth.identity import sample_identity

    ident = sample_identity(np.random.default_rng(3))
    frames = np.zeros((2, 128, 128, 3), np.uint8)
    meta = [{"identity": ident.to_json()}]
    store = ClipStore(frames, np.array([0, 2]), {}, np.zeros(2, np.int64), meta)
    mask = store.eye_mask(0)
    for x0, y0, x1, y1 in face_layout(ident, width=128, height=128).eyes:
        assert mask[int((y0 + y1) / 2), int((x0 + x1) / 2)] == 1.0
    assert 0 < mask.mean() < 0.05 and mask[100:, :].sum() == 0 and mask[:, :20].sum() == 0


def test_mouth_mask_covers_the_layouts_mouth_and_not_the_eyes():
    from unison_stream.codecs.data import ClipStore
    from unison_stream.data.synth.face import face_layout
    from unison_stream.data.synth.identity import sample_identity

    ident = sample_identity(np.random.default_rng(3))
    frames = np.zeros((2, 128, 128, 3), np.uint8)
    store = ClipStore(frames, np.array([0, 2]), {}, np.zeros(2, np.int64),
                      [{"identity": ident.to_json()}])  # fmt: skip
    mask = store.mouth_mask(0)
    x0, y0, x1, y1 = face_layout(ident, width=128, height=128).mouth
    assert mask[int((y0 + y1) / 2), int((x0 + x1) / 2)] == 1.0
    assert 0 < mask.mean() < 0.05 and (mask * store.eye_mask(0)).sum() == 0


def test_mouth_loss_sees_only_the_mouth_and_charges_a_lightened_interior():
    """The mouth term is 0 for frames wrong only outside the mouth mask, and positive for a
    mouth whose dark interior was painted a lip-like shade; its membership part charges that
    more than the pixels' L1 alone would."""
    from unison_stream.data.synth.identity import MOUTH_INTERIOR
    from unison_stream.training.codec_losses import interior, mouth_l1

    skin = torch.full((1, 2, 16, 16, 3), 0.8)
    truth = skin.clone()
    truth[:, :, 7:10, 5:11] = torch.tensor(MOUTH_INTERIOR) / 255.0  # an open mouth
    mask = torch.zeros(1, 1, 16, 16, 1)
    mask[:, :, 5:12, 3:13] = 1.0
    assert float(interior(truth).sum()) == pytest.approx(2 * 18, abs=1e-3)
    elsewhere = truth.clone()
    elsewhere[:, :, :3] = 0.0  # wrong above the mask only
    assert float(mouth_l1(elsewhere, truth, mask)) == 0.0
    assert float(mouth_l1(truth, truth, mask)) == 0.0
    lighter = truth.clone()
    lighter[:, :, 7:10, 5:11] += torch.tensor([0.15, 0.1, 0.1])  # closed-looking, lip colour
    pix = float(((lighter - truth).abs() * mask).sum() / (3 * 2 * mask.sum()))
    assert float(mouth_l1(lighter, truth, mask)) > 2 * pix > 0


def test_loss_weights_come_from_one_registry_and_old_names_still_work():
    """Every term has a default weight; a run's ``losses`` overrides some; the weights' old
    field names (the journal's commands) land in ``losses``; an unknown name is refused."""
    from unison_stream.config import ConfigError
    from unison_stream.training.codec_config import (
        DEFAULT_LOSS_WEIGHTS,
        load_codec_train_config,
        loss_weights,
    )
    from unison_stream.training.codec_losses import LOSSES

    assert set(LOSSES) <= set(DEFAULT_LOSS_WEIGHTS)
    assert {k: v for k, v in DEFAULT_LOSS_WEIGHTS.items() if v} == {
        "l1": 1.0, "mr_stft": 1.0, "mel": 1.0, "latent_l2": 1e-3}  # fmt: skip
    assert loss_weights({"edge": 2.0}) == {**DEFAULT_LOSS_WEIGHTS, "edge": 2.0}
    tc = load_codec_train_config("video", ["edge_weight=1.0", "adv_weight=0.5", "losses.sharp=32"])
    assert tc.losses == {**DEFAULT_LOSS_WEIGHTS, "edge": 1.0, "adv": 0.5, "sharp": 32.0}
    with pytest.raises(ConfigError, match="no term named blur"):
        load_codec_train_config("video", ["losses.blur=1"])
    with pytest.raises(ConfigError, match="≥ 0"):
        loss_weights({"edge": -1.0})
