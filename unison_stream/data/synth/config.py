"""Knobs of the synthetic avatar world (``docs/data.md``), gathered in one typed dataclass.

Every rate, range and level the generator uses comes from :class:`WorldConfig`; the media
defaults mirror :class:`unison_stream.config.MediaConfig` so generated clips match the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unison_stream.config import MediaConfig

__all__ = ["WorldConfig"]

_MEDIA = MediaConfig()


@dataclass(frozen=True)
class WorldConfig:
    """Everything the generator may vary, with the reason for each default."""

    # ---- media -----------------------------------------------------------------------------
    fps: float = _MEDIA.fps
    width: int = _MEDIA.width
    height: int = _MEDIA.height
    sample_rate: int = _MEDIA.sample_rate
    supersample: int = 4  # draw at 4× then box-filter down: smooth edges at 128 px

    # ---- text and timing -------------------------------------------------------------------
    min_words: int = 4  # shortest sentence; with tags a clip lasts ~2–6 s
    max_words: int = 11
    max_events: int = 2  # tags per transcript (0..max_events)
    event_prob: float = 0.8  # chance that a clip has at least one tag
    lead_in_s: tuple[float, float] = (0.15, 0.4)  # silence before the first sound
    tail_s: tuple[float, float] = (0.3, 0.6)  # room after the last sound (bell rings on)
    event_gap_s: tuple[float, float] = (0.35, 0.6)  # speech pause that holds one event
    min_event_spacing_s: float = 0.9  # gestures (~0.7 s long) never overlap

    # ---- speech (espeak-ng) ----------------------------------------------------------------
    voices: tuple[str, ...] = (
        "en-us+m3",
        "en-us+f3",
        "en-us+m7",
        "en-us+f5",
        "en+m1",
        "en+f2",
        "en-us+klatt",
        "en+m5",
    )
    rate_wpm: tuple[int, int] = (135, 185)  # espeak words per minute
    pitch: tuple[int, int] = (30, 70)  # espeak 0..100
    pitch_range: tuple[int, int] = (30, 80)  # espeak 0..100 (monotone .. lively)

    # ---- mixing (dB relative to full scale) ------------------------------------------------
    speech_rms_db: tuple[float, float] = (-23.0, -18.0)
    event_peak_db: tuple[float, float] = (-12.0, -3.0)  # peak level of each effect
    ambience_rms_db: tuple[float, float] = (-42.0, -28.0)  # beds sit well under speech
    mix_headroom: float = 0.97  # peak of the mix after scaling (all stems scaled alike)

    # ---- motion ----------------------------------------------------------------------------
    blink_rate_hz: tuple[float, float] = (0.2, 0.5)  # people blink every 2–5 s
    blink_s: float = 0.16  # one blink, close and open
    head_sway_px: tuple[float, float] = (0.5, 2.5)  # at output resolution
    nod_px: float = 1.5  # vertical nod on stressed words
    mouth_smooth_s: float = 0.03  # coarticulation: mouth params low-passed with this time constant
    gesture_approach_s: float = 0.32  # hand travel before contact
    gesture_retract_s: float = 0.36  # hand travel after contact

    # ---- dataset ---------------------------------------------------------------------------
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    shard_size: int = 64  # clips per tar shard
    extra: dict[str, str] = field(default_factory=dict)  # free notes carried into the manifest

    def samples_per_frame(self) -> int:
        n = self.sample_rate / self.fps
        assert abs(n - round(n)) < 1e-9, "sample_rate / fps must be a whole number of samples"
        return round(n)
