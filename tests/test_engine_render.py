"""``render --audio``: the audio-driven mode writes a playable file as long as the speech;
``render --stems``: the mix and its two stems beside it, the stems summing to the mix."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np

from tests.helpers import TEST_OVERRIDES
from unison_stream.cli import main
from unison_stream.media import probe_duration
from unison_stream.render import read_audio, stem_paths


def test_render_audio_driven_matches_the_speech_length(tmp_path: Path) -> None:
    rate, seconds = 22050, 0.7
    t = np.arange(int(rate * seconds)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    wav = tmp_path / "speech.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    got, got_rate = read_audio(wav)
    assert got_rate == rate and abs(len(got) - len(pcm)) <= 1
    np.testing.assert_allclose(got[: len(pcm)], pcm / 32768.0, atol=1e-4)

    out = tmp_path / "driven.mp4"
    assert main(["render", "--audio", str(wav), "-o", str(out), *TEST_OVERRIDES]) == 0
    chunk = 0.16  # the test config's chunk
    expected = (math.ceil(seconds / chunk) + math.ceil(0.5 / chunk - 1e-9)) * chunk
    dur = probe_duration(out)
    assert abs(dur["video"] - expected) < 0.041, dur
    assert abs(dur["audio"] - expected) < 0.07, dur


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono WAV → float samples in [-1, 1] and its rate."""
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        return pcm.astype(np.float64) / 32767.0, w.getframerate()


def test_render_stems_sum_to_the_mix(tmp_path: Path) -> None:
    """The audio-driven mode: the caller's speech is the speech stem, the model makes the
    effects; the three WAVs are as long as the clip and the stems sum to the mix."""
    rate, seconds = 16000, 0.5
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.4 * np.sin(2 * np.pi * 220 * t)
    wav = tmp_path / "speech.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((tone * 32767).astype(np.int16).tobytes())

    out = tmp_path / "clip.mp4"
    args = ["render", "--audio", str(wav), "-o", str(out), "--stems", *TEST_OVERRIDES]
    assert main(args) == 0
    mix_path, speech_path, sfx_path = stem_paths(out)
    assert (mix_path.name, speech_path.name, sfx_path.name) == (
        "clip.wav",
        "clip.speech.wav",
        "clip.sfx.wav",
    )
    (mix, r0), (speech, r1), (sfx, r2) = (_read_wav(p) for p in stem_paths(out))
    assert r0 == r1 == r2 == 16000  # the media rate of the test config
    assert len(mix) == len(speech) == len(sfx)
    assert abs(len(mix) / r0 - probe_duration(out)["audio"]) < 0.07  # the video's audio
    assert float(np.sqrt(np.mean((speech + sfx - mix) ** 2))) < 1e-3
    assert float(np.sqrt(np.mean(sfx**2))) > 1e-3, "no effects stem to split"
    # the speech stem is the caller's tone (at the mix's level), not the effects
    n = len(tone)
    assert float(np.corrcoef(speech[:n], tone)[0, 1]) > 0.9
    assert abs(float(np.corrcoef(sfx[:n], tone)[0, 1])) < 0.5
