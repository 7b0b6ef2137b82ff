"""Knobs of the synthetic avatar world (``docs/data.md``), gathered in one typed dataclass.

Every rate, range and level the generator uses comes from :class:`WorldConfig`; the media
defaults mirror :class:`unison_stream.config.MediaConfig` so generated clips match the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unison_stream.config import MediaConfig

__all__ = ["WORLD_PRESETS", "WorldConfig", "parse_kinds"]

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

    # ---- clip kinds, rests and idle motion (docs/data.md "States") ------------------------
    # The defaults keep the classic world (speech clips only, byte-identical to earlier runs).
    kinds: tuple[tuple[str, float], ...] = (("speech", 1.0),)  # (kind, share of clips)
    quiet_s: tuple[float, float] = (5.0, 30.0)  # length of a quiet or listening clip
    quiet_mean_s: float = 10.0  # their mean: a long tail up to 30 s, yet the data stays small
    rest_s: tuple[float, float] | None = None  # idle rest before and/or after the words; None off
    idle_motion: bool = False  # breathing and gaze shifts (listening: nods, smiles) in all clips
    breath_px: tuple[float, float] = (0.25, 0.5)  # vertical drift of breathing, output px
    breath_hz: tuple[float, float] = (0.2, 0.33)  # 12–20 breaths a minute at rest
    gaze_hold_s: tuple[float, float] = (1.0, 4.0)  # how long the eyes rest on one spot
    listen_nod_gap_s: tuple[float, float] = (1.5, 4.5)  # between a listener's nods
    smile_s: tuple[float, float] = (0.8, 2.0)  # one brief closed-mouth smile
    smile_gap_s: tuple[float, float] = (3.0, 9.0)  # between a listener's smiles

    # ---- looks for pictures users bring (identity.py ``Look``) -----------------------------
    look_share: float = 0.0  # share of the identity pool with free colours and accessories
    look_unnatural_skin: float = 0.3  # of those: skin of any colour (green, purple …)
    look_glasses: float = 0.35  # chance of each accessory on a look identity
    look_headwear: float = 0.3
    look_earrings: float = 0.3

    # ---- dataset ---------------------------------------------------------------------------
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    shard_size: int = 64  # clips per tar shard
    extra: dict[str, str] = field(default_factory=dict)  # free notes carried into the manifest

    def __post_init__(self) -> None:
        known = ("speech", "quiet", "listening")
        for name, share in self.kinds:
            if name not in known:
                raise ValueError(f"unknown clip kind {name!r}; kinds are {', '.join(known)}")
            if share < 0:
                raise ValueError(f"clip kind {name!r} has a negative share {share}")
        if not self.kinds or sum(share for _, share in self.kinds) <= 0:
            raise ValueError("the clip kinds' shares must add up to more than 0")
        lo, hi = self.quiet_s
        if not 0 < lo < self.quiet_mean_s < hi:
            raise ValueError(f"quiet_mean_s {self.quiet_mean_s} must lie inside quiet_s {lo}..{hi}")
        if self.rest_s is not None and not 0 <= self.rest_s[0] <= self.rest_s[1]:
            raise ValueError(f"rest_s {self.rest_s} must be an ordered range of seconds ≥ 0")
        if not 0 <= self.look_share <= 1:
            raise ValueError(f"look_share {self.look_share} must lie in 0..1")

    def classic(self) -> bool:
        """Whether this is the classic world (speech only, no rests, idle extras or looks)."""
        return (
            tuple(name for name, share in self.kinds if share > 0) == ("speech",)
            and self.rest_s is None
            and not self.idle_motion
            and self.look_share == 0
        )

    def samples_per_frame(self) -> int:
        n = self.sample_rate / self.fps
        assert abs(n - round(n)) < 1e-9, "sample_rate / fps must be a whole number of samples"
        return round(n)


# Named worlds, also the choices of ``unison-stream data synth --world``.
WORLD_PRESETS: dict[str, WorldConfig] = {
    # the world the bundled model was first trained on: 2–6 s speech clips
    "classic": WorldConfig(),
    # every state a viewer sees: speech with rests around it, quiet and listening clips of
    # 5–30 s (~40 % of the seconds), and 30 % of people with free colours and accessories
    "states": WorldConfig(
        kinds=(("speech", 0.7), ("quiet", 0.15), ("listening", 0.15)),
        rest_s=(0.4, 3.0),
        idle_motion=True,
        look_share=0.3,
    ),
}


def parse_kinds(text: str) -> tuple[tuple[str, float], ...]:
    """``"speech=0.6,quiet=0.2"`` → ``(("speech", 0.6), ("quiet", 0.2))`` (the config checks)."""
    out = []
    for part in text.split(","):
        name, sep, share = part.partition("=")
        try:
            out.append((name.strip(), float(share)))
        except ValueError:
            raise ValueError(f"bad kind {part!r}: write KIND=SHARE, e.g. quiet=0.2") from None
        if not sep:
            raise ValueError(f"bad kind {part!r}: write KIND=SHARE, e.g. quiet=0.2")
    return tuple(out)
