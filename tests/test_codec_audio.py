"""Audio codec: shapes, iSTFT head, chunked == full decode, seam energy, learning, sentence ID."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unison_stream.codecs import load_decoders, load_encoders, metrics
from unison_stream.codecs import weights as cw
from unison_stream.codecs.audio import AudioAE, AudioEncoderStream, StreamingAudioDecoder
from unison_stream.codecs.config import AudioCodecConfig
from unison_stream.codecs.data import ClipStore
from unison_stream.config import LatentConfig, MediaConfig, load_config

SMALL = AudioCodecConfig(width=64, enc_blocks=1, dec_blocks=2)
SR, HOP = 16000, 640


def _ae(cfg: AudioCodecConfig = SMALL) -> AudioAE:
    torch.manual_seed(0)
    return AudioAE(cfg, LatentConfig(), MediaConfig()).eval()


def _tones(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """(n, S) chirps with an amplitude envelope: speech-like pitch glides."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR) // HOP * HOP) / SR
    out = []
    for _ in range(n):
        f0, f1 = rng.uniform(100, 300), rng.uniform(100, 300)
        f = f0 + (f1 - f0) * t / t[-1]
        phase = 2 * np.pi * np.cumsum(f) / SR
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
        x = sum(np.sin(k * phase) / k for k in range(1, 6)) * env * 0.2
        out.append(x)
    return torch.tensor(np.stack(out), dtype=torch.float32)


def test_shapes_and_protocol():
    ae = _ae()
    z = AudioEncoderStream(ae).encode(np.zeros((2, 10 * HOP - 5), np.float32))
    assert z.shape == (2, 10, 32)  # padded to a whole latent frame
    y = StreamingAudioDecoder(ae).decode(z)
    assert y.shape == (2, 10 * HOP) and y.dtype == np.float32


def test_istft_head_reconstructs_its_own_analysis():
    """Feeding the STFT of x (Hann, hop 160) through irfft · window + overlap-add gives x back
    (after the first n_fft − hop samples, which lack earlier frames)."""
    ae = _ae()
    x = _tones(1, 1.0)
    c = ae.cfg
    spec = torch.stft(F.pad(x, (0, c.n_fft - c.stft_hop)), c.n_fft, c.stft_hop,
                      window=ae.window, center=False, return_complex=True)  # fmt: skip
    frames = torch.fft.irfft(spec.transpose(1, 2), n=c.n_fft) * ae.window  # (1, J, n_fft)
    y, tail = ae.overlap_add(frames, None)
    lead = c.n_fft - c.stft_hop
    torch.testing.assert_close(y[:, lead:], x[:, lead:], atol=1e-5, rtol=0)
    assert tail.shape == (1, lead)


@pytest.mark.parametrize(
    "cfg", [AudioCodecConfig(), AudioCodecConfig(dec_n_fft=320, dec_stft_hop=80)], ids=str
)
def test_chunked_decode_equals_full_decode(cfg: AudioCodecConfig):
    ae = _ae(cfg)
    z = torch.randn(2, 16, 32)
    dec = StreamingAudioDecoder(ae)
    full = dec.decode(z)
    for sizes in ((8, 8), (3, 5, 1, 7), (1,) * 16):
        dec.reset()
        parts, at = [], 0
        for n in sizes:
            parts.append(dec.decode(z[:, at : at + n]))
            at += n
        diff = np.abs(np.concatenate(parts, 1) - full)
        assert diff.max() < 1e-5 * max(1.0, float(np.abs(full).max())), f"chunks {sizes}"


def test_decoder_with_its_own_stft_keeps_the_encoder_and_its_latents():
    """A decoder with a shorter STFT (20 ms) starts from a trained codec: every encoder tensor
    is loaded (same latents), the new head is fresh, frames are dec_n_fft long."""
    from unison_stream.training.codec import _load_fitting

    old = _ae()
    cfg = AudioCodecConfig(width=64, enc_blocks=1, dec_blocks=2, dec_n_fft=320, dec_stft_hop=80)
    new = AudioAE(cfg, LatentConfig(), MediaConfig()).eval()
    _load_fitting(new, old.state_dict(), need_encoder=True)
    x = _tones(1, 0.64)
    torch.testing.assert_close(new.encode(x), old.encode(x), rtol=0, atol=0)
    frames, _ = new.decode_frames(new.encode(x))
    assert frames.shape == (1, 16 * 8, 320)  # 8 frames of hop 80 per 640-sample latent frame
    wide = AudioAE(AudioCodecConfig(width=32), LatentConfig(), MediaConfig())
    with pytest.raises(SystemExit, match="encoder does not fit"):
        _load_fitting(wide, old.state_dict(), need_encoder=True)


def _seam_ratio(y: np.ndarray, joins: list[int], w: int = 32) -> float:
    """Energy of the first difference within ±w samples of each join, relative to its mean
    over the whole signal (1 ≈ a join looks like anywhere else; a click is ≫ 1)."""
    d = np.diff(y) ** 2
    near = np.concatenate([d[j - w : j + w] for j in joins])
    return float(near.mean() / d.mean())


def test_seam_energy_bound_at_chunk_joins():
    """Chunk joins add no energy: chunked − full is ≤ 1e-10 of the signal energy near joins,
    and the joins of a chunked decode look like any other stretch of the signal."""
    ae = _ae(AudioCodecConfig())
    x = _tones(1, 2.56)
    z = ae.encode(x)
    dec = StreamingAudioDecoder(ae)
    full = dec.decode(z)[0]
    dec.reset()
    chunk = 8  # 0.32 s, the tiny preset's chunk
    y = np.concatenate([dec.decode(z[:, i : i + chunk]) for i in range(0, z.shape[1], chunk)], 1)[0]
    joins = list(range(chunk * HOP, len(y) - 64, chunk * HOP))
    err = np.concatenate([(y - full)[j - HOP : j + HOP] for j in joins])
    assert (err**2).sum() <= 1e-10 * (full**2).sum() + 1e-12
    assert _seam_ratio(y, joins) < 3.0


def test_round_trip_improves_with_training():
    ae = _ae()
    ae.train()
    x = _tones(2, 0.64)

    def score() -> float:
        with torch.no_grad():
            return float(metrics.mr_stft(ae.decode(ae.encode(x)), x))

    before = score()
    opt = torch.optim.Adam(ae.parameters(), 5e-3)
    for _ in range(20):
        loss = metrics.mr_stft(ae.decode(ae.encode(x)), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = score()
    assert after < 0.85 * before, f"MR-STFT {before:.2f} → {after:.2f}"


def test_metrics_sanity():
    x = _tones(2, 0.64)
    noisy = x + 0.01 * torch.randn_like(x)
    assert float(metrics.mel_l1(x, x)) == 0.0
    assert float(metrics.mr_stft(x, x)) < 1e-6
    assert float(metrics.si_sdr(noisy, x).min()) > 20
    assert float(metrics.si_sdr(3 * x, x).min()) > 60  # scale-invariant
    img = torch.rand(2, 32, 32, 3)
    assert float(metrics.ssim(img, img).min()) == pytest.approx(1.0, abs=1e-5)
    assert float(metrics.psnr(img, (img + 0.1).clamp(0, 1)).min()) > 15


def test_sentence_identification_of_espeak_speech():
    pytest.importorskip("pocketsphinx")
    from unison_stream.data.synth import speech

    if not speech.available():
        pytest.skip("libespeak-ng not available")
    from unison_stream.codecs.sentence_id import SentenceIdentifier

    sentences = ["The shiny robot opened the window.", "Hello Maya, nice to meet you.",
                 "Please paint the wooden castle tomorrow."]  # fmt: skip
    sid = SentenceIdentifier(sentences)
    for i, s in enumerate(sentences):
        audio = speech.synthesize(s, voice="en-us+f5", rate=160, pitch=50, pitch_range=50,
                                  sample_rate=SR).audio  # fmt: skip
        assert sid.identify(audio) == i, f"{s!r} heard as {sid.recognise(audio)!r}"


@pytest.mark.skipif(not cw.weights_path("audio").exists(), reason="no bundled audio weights")
def test_bundled_audio_codec_round_trip():
    cfg = load_config("tiny")
    _, speech_dec, _ = load_decoders(cfg)
    assert isinstance(speech_dec, StreamingAudioDecoder)
    _, enc = load_encoders(cfg)
    x = _tones(1, 1.28)
    trained = float(metrics.mel_l1(torch.from_numpy(speech_dec.decode(enc.encode(x))), x))
    fresh = _ae(AudioCodecConfig())
    with torch.no_grad():
        untrained = float(metrics.mel_l1(fresh.decode(fresh.encode(x)), x))
    assert trained < 0.5 * untrained, f"mel L1 trained {trained:.2f} vs untrained {untrained:.2f}"


def test_envelope_loss_sees_pre_echo_that_a_gain_change_does_not_cause():
    sr = 16000
    x = np.zeros(sr, np.float32)
    x[8000:8400] = np.hanning(800)[400:] * 0.8  # a click: sharp attack, short decay
    echo = x.copy()
    echo[7520:8000] = 0.03 * np.random.default_rng(0).standard_normal(480)  # 30 ms before it
    t = [torch.from_numpy(a)[None] for a in (x, echo, 0.8 * x)]
    assert float(metrics.envelope_l1(t[0], t[0])) == 0.0
    assert float(metrics.envelope_l1(t[1], t[0])) > 3 * float(metrics.envelope_l1(t[2], t[0]))


def test_effect_crops_hold_an_onset_after_the_first_latent_frame():
    sr, hop, samples = 16000, 640, 24 * 640
    sfx = np.zeros(10 * sr, np.float32)
    starts = [int(s * sr) for s in (0.3, 2.05, 4.5, 9.6)]
    for s in starts:
        sfx[s : s + 1600] = 0.5
    store = ClipStore(
        frames=np.zeros((1, 2, 2, 3), np.uint8),
        frame_off=np.array([0, 1]),
        audio={"sfx": sfx, "mix": sfx.copy(), "speech": np.zeros_like(sfx)},
        audio_off=np.array([0, len(sfx)]),
        meta=[{}],
    )
    onsets = store.effect_onsets()
    assert np.abs(onsets - np.array(starts)).max() <= 80, "found to one 5 ms frame"
    crops = store.effect_crops(np.random.default_rng(0), 64, samples, hop, onsets)
    assert crops.shape == (64, samples)
    for c in crops:  # a rising edge after the first latent frame and 0.1 s before the end
        rises = np.flatnonzero((c[1:] > 0.25) & (c[:-1] <= 0.25)) + 1
        assert any(hop <= r <= samples - 1600 for r in rises), rises
