"""``render --audio``: the audio-driven mode writes a playable file as long as the speech."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np

from tests.helpers import TEST_OVERRIDES
from unison_stream.cli import main
from unison_stream.media import probe_duration
from unison_stream.render import read_audio


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
