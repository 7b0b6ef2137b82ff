"""Harmony figures (docs/eval.md) on stems built to known levels: clean stems read at the floor,
speech copied into the effects stem reads its gain, and the effect-to-speech ratio follows the
effect's level."""

from __future__ import annotations

import numpy as np
import pytest

from unison_stream.eval.harmony import FLOOR_DB, clip_harmony, summarise_harmony
from unison_stream.eval.sfx import EventResult, summarise_by_class

SR = 16000


def _stems(effect_gain: float = 0.5) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """2 s: speech-like noise at 0.1 RMS except a pause 0.9–1.4 s, one effect at 1.0 s."""
    rng = np.random.default_rng(0)
    speech = (0.1 * rng.standard_normal(2 * SR)).astype(np.float32)
    speech[int(0.9 * SR) : int(1.4 * SR)] = 0.0
    sfx = np.zeros(2 * SR, np.float32)
    n = int(0.15 * SR)
    sfx[SR : SR + n] = effect_gain * np.sin(np.arange(n) * 2 * np.pi * 900 / SR)
    return speech, sfx, [1.0]


def test_clean_stems_leak_nothing_and_the_ratio_follows_the_effect_level() -> None:
    speech, sfx, contacts = _stems()
    h = clip_harmony(speech, sfx, contacts, SR)
    assert h["speech_in_sfx_db"] == FLOOR_DB and h["sfx_in_speech_db"] == FLOOR_DB
    # effect RMS 0.5/√2 over speech RMS 0.1: 20·log10(3.54) ≈ 11 dB
    assert h["effect_to_speech_db"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2) / 0.1), abs=0.2)
    quieter = clip_harmony(speech, _stems(0.05)[1], contacts, SR)
    assert quieter["effect_to_speech_db"] == pytest.approx(h["effect_to_speech_db"] - 20, abs=0.2)  # type: ignore[operator]
    s = summarise_harmony([quieter], [h])
    assert s["harmony_esr_error_db"] == pytest.approx(20, abs=0.2)


def test_speech_in_the_effects_stem_reads_its_gain_and_effects_in_speech_theirs() -> None:
    speech, sfx, contacts = _stems()
    leaky = clip_harmony(speech, sfx + 0.25 * speech, contacts, SR)
    assert leaky["speech_in_sfx_db"] == pytest.approx(20 * np.log10(0.25), abs=0.3)
    back = clip_harmony(speech + 0.1 * sfx, sfx, contacts, SR)
    assert back["sfx_in_speech_db"] == pytest.approx(-20, abs=0.3)
    assert clip_harmony(speech, sfx, [], SR)["effect_to_speech_db"] is None  # nothing requested


def test_events_summarised_per_class_with_the_signed_offset() -> None:
    ev = [
        EventResult("clap", 1.0, 1.04, 1.0),
        EventResult("clap", 2.0, 2.02, 2.0),
        EventResult("knock", 3.0, float("nan"), 3.0),
        EventResult("knock", 4.0, 3.98, 4.0),
    ]
    by = summarise_by_class(ev)
    assert list(by) == ["clap", "knock"]
    assert by["clap"]["recall"] == 1.0 and by["clap"]["align_signed_ms"] == pytest.approx(30.0)
    assert by["knock"]["recall"] == 0.5 and by["knock"]["align_signed_ms"] == pytest.approx(-20.0)
