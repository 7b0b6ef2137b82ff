"""Assemble one clip of the synthetic world: text → speech → events → mix → motion → frames.

Timing rules (the ground truth every test relies on):

- Frame ``f`` shows the instant ``f / fps`` and owns audio samples ``[f·spf, (f+1)·spf)``
  (``spf = sample_rate / fps``, a whole number).
- Speech is synthesised per piece between tags; each piece's phoneme and word times are shifted
  by the exact sample where the piece is placed. Gaps are filled with ``_`` (silence) spans so
  the phoneme track covers the clip.
- An event's contact time is a frame instant ``t_c = f_c / fps``: its effect starts at sample
  ``f_c · spf`` and the gesture reaches its contact pose in frame ``f_c``. So audio onset and
  visual contact coincide by construction, and the tests measure both from the media.
- Quiet and listening clips (:mod:`.states`) hold no speech and no events: one ``_`` span over
  the clip, the mouth at rest. Rests in speech clips push the words later and the end further.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unison_stream.data.synth.ambience import AMBIENCES, synth_ambience
from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.face import FaceRenderer, FaceState
from unison_stream.data.synth.gesture import PROPS, hands_at
from unison_stream.data.synth.identity import Identity
from unison_stream.data.synth.sfx import audible_length, synth_event
from unison_stream.data.synth.speech import Timed, synthesize
from unison_stream.data.synth.states import IdleMotion, StateDraw, idle_motion
from unison_stream.data.synth.text import Script, caption
from unison_stream.data.synth.visemes import mouth_track, viseme_track

__all__ = ["Clip", "ClipSpec", "EventTiming", "make_clip", "sample_spec"]


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides a clip; with the world config it determines every sample."""

    clip_id: str
    seed: int  # drives levels, gaps, blinks, head motion and effect instances
    identity: Identity
    script: Script
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    ambience: str
    state: StateDraw = field(default_factory=StateDraw)  # kind, rests, quiet length

    def voice_json(self) -> dict[str, Any] | None:
        if self.state.kind != "speech":
            return None
        return {
            "name": self.voice,
            "rate": self.rate,
            "pitch": self.pitch,
            "range": self.pitch_range,
        }


@dataclass(frozen=True)
class EventTiming:
    name: str
    audio_onset: float  # s, first sample of the effect
    audio_end: float  # s, where it decays below −40 dB
    contact_frame: int  # frame showing the contact pose
    visual_contact: float  # s, contact_frame / fps

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "audio_onset": round(self.audio_onset, 5),
            "audio_end": round(self.audio_end, 5),
            "contact_frame": self.contact_frame,
            "visual_contact": round(self.visual_contact, 5),
        }


@dataclass
class Clip:
    spec: ClipSpec
    fps: float
    sample_rate: int
    frames: np.ndarray  # (F, H, W, 3) uint8
    speech: np.ndarray  # (S,) float32, S = F · spf
    sfx: np.ndarray  # (S,) effects + ambience
    ambience: np.ndarray  # (S,) the bed alone (already inside sfx)
    mix: np.ndarray  # (S,) speech + sfx
    phonemes: list[Timed]
    words: list[Timed]
    visemes: list[Timed]
    mouth: np.ndarray  # (F, 3) opening, width, rounding that drove the renderer
    events: list[EventTiming]
    transcript: str
    caption: str
    states: list[FaceState]  # what the renderer drew per frame (not stored; for checks)
    props: list[str]
    idle: IdleMotion | None = None  # breathing, gaze, nods, smiles (config ``idle_motion``)

    def state_annotations(self) -> dict[str, Any]:
        """Ground truth of the kind, rests and idle motion (rows of non-classic worlds)."""
        st = self.spec.state
        return {
            "kind": st.kind,
            "rest": [round(st.rest[0], 5), round(st.rest[1], 5)],
            "nods": self.idle.nods if self.idle else [],
            "smiles": [list(s) for s in self.idle.smiles] if self.idle else [],
        }

    def annotations(self) -> dict[str, Any]:
        """The JSON-able ground truth stored in the manifest row."""
        return {
            "transcript": self.transcript,
            "caption": self.caption,
            "sentence": self.spec.script.sentence(),
            "phonemes": [p.to_json() for p in self.phonemes],
            "words": [w.to_json() for w in self.words],
            "visemes": [v.to_json() for v in self.visemes],
            "events": [e.to_json() for e in self.events],
            "mouth_open": [round(float(v), 4) for v in self.mouth[:, 0]],
            "identity": self.spec.identity.to_json(),
            "voice": self.spec.voice_json(),
            "ambience": self.spec.ambience,
        }


def sample_spec(
    rng: np.random.Generator, cfg: WorldConfig, *, clip_id: str, identity: Identity, script: Script
) -> ClipSpec:
    """Draw voice, prosody and ambience for a clip whose identity and script are chosen."""
    return ClipSpec(
        clip_id=clip_id,
        seed=int(rng.integers(2**31)),
        identity=identity,
        script=script,
        voice=str(cfg.voices[int(rng.integers(len(cfg.voices)))]),
        rate=int(rng.integers(cfg.rate_wpm[0], cfg.rate_wpm[1] + 1)),
        pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
        pitch_range=int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)),
        ambience=str(list(AMBIENCES)[int(rng.integers(len(AMBIENCES)))]),
    )


def _db(v: float) -> float:
    return float(10 ** (v / 20))


def _fill_silence(spans: list[Timed], total: float) -> list[Timed]:
    """Insert ``_`` spans into the gaps so the track covers ``[0, total]``."""
    out: list[Timed] = []
    t = 0.0
    for p in spans:
        if p.start > t + 1e-6:
            out.append(Timed("_", t, p.start))
        out.append(p)
        t = p.end
    if total > t + 1e-6:
        out.append(Timed("_", t, total))
    merged: list[Timed] = []
    for p in out:  # merge neighbouring silences
        if merged and p.label == "_" and merged[-1].label == "_":
            merged[-1] = Timed("_", merged[-1].start, p.end)
        else:
            merged.append(p)
    return merged


def _timeline(
    spec: ClipSpec, cfg: WorldConfig, rng: np.random.Generator
) -> tuple[list[tuple[int, np.ndarray]], list[Timed], list[Timed], list[tuple[str, int]], int]:
    """Place speech pieces and event contacts; returns samples, spans, contacts and length."""
    sr, spf = cfg.sample_rate, cfg.samples_per_frame()
    pieces: list[tuple[int, np.ndarray]] = []
    phonemes: list[Timed] = []
    words: list[Timed] = []
    contacts: list[tuple[str, int]] = []  # (event, contact frame)
    t = float(rng.uniform(*cfg.lead_in_s)) + spec.state.rest[0]
    last_contact = -math.inf
    for text, event in spec.script.segments():
        if text:
            sp = synthesize(
                text,
                voice=spec.voice,
                rate=spec.rate,
                pitch=spec.pitch,
                pitch_range=spec.pitch_range,
                sample_rate=sr,
            )
            voiced = [p for p in sp.phonemes if p.label != "_"]
            keep = (voiced[-1].end if voiced else 0.0) + 0.04  # drop espeak's trailing pause
            n = min(len(sp.audio), int(keep * sr))
            at = round(t * sr)
            off = at / sr
            pieces.append((at, sp.audio[:n]))
            phonemes += [
                Timed(p.label, p.start + off, min(p.end, n / sr) + off)
                for p in sp.phonemes
                if p.start < n / sr and p.label != "_"
            ]
            words += [Timed(w.label, w.start + off, w.end + off) for w in sp.words]
            t = off + n / sr
        if event is not None:
            gap = float(rng.uniform(*cfg.event_gap_s))
            earliest = max(t + 0.25 * gap, last_contact + cfg.min_event_spacing_s)
            earliest = max(earliest, cfg.gesture_approach_s)
            frame = math.ceil(earliest * cfg.fps - 1e-9)
            contacts.append((event, frame))
            last_contact = frame / cfg.fps
            t = max(t + gap, last_contact + 0.15)
    total = t + float(rng.uniform(*cfg.tail_s))
    if contacts:  # let the last gesture finish and the last effect ring
        total = max(total, last_contact + cfg.gesture_retract_s + 0.1)
    total += spec.state.rest[1]
    num_frames = math.ceil(total * cfg.fps)
    del spf
    return pieces, phonemes, words, contacts, num_frames


def _motion(
    spec: ClipSpec,
    cfg: WorldConfig,
    rng: np.random.Generator,
    words: list[Timed],
    contacts: list[tuple[str, int]],
    num_frames: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame head offsets ``(F, 2)``, blink ``(F,)`` and brow ``(F,)``."""
    t = np.arange(num_frames) / cfg.fps
    amp = rng.uniform(*cfg.head_sway_px)
    head = np.zeros((num_frames, 2))
    for axis, scale in ((0, 1.0), (1, 0.5)):
        for hz in (rng.uniform(0.15, 0.35), rng.uniform(0.5, 0.9)):
            head[:, axis] += scale * amp * 0.5 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6.3))
    for w in words:  # a small nod on longer (likely stressed) words
        if len(w.label.strip(",.!?")) >= 5:
            head[:, 1] += cfg.nod_px * np.exp(-(((t - w.start - 0.08) / 0.08) ** 2))
    blink = np.zeros(num_frames)
    tb = float(rng.exponential(1 / rng.uniform(*cfg.blink_rate_hz)))
    while tb < t[-1] + 1:
        blink = np.maximum(blink, np.clip(1 - np.abs(t - tb) / (cfg.blink_s / 2), 0, 1))
        tb += float(rng.uniform(1.5, 5.0))
    brow = np.zeros(num_frames)
    for _, f in contacts:  # eyebrows lift as the hand strikes
        brow = np.maximum(brow, np.exp(-(((t - f / cfg.fps) / 0.25) ** 2)))
    return head, blink, brow


def make_clip(spec: ClipSpec, cfg: WorldConfig) -> Clip:
    """Render audio, video and ground truth for ``spec``."""
    rng = np.random.default_rng(spec.seed)
    sr, spf = cfg.sample_rate, cfg.samples_per_frame()
    if spec.state.kind == "speech":
        pieces, phon, words, contacts, num_frames = _timeline(spec, cfg, rng)
    else:  # quiet or listening: no words, no events
        pieces, phon, words, contacts = [], [], [], []
        num_frames = math.ceil(spec.state.quiet_s * cfg.fps)
    n = num_frames * spf
    duration = n / sr

    speech = np.zeros(n, np.float32)
    for at, x in pieces:
        speech[at : at + len(x)] += x[: n - at]
    voiced = speech[np.abs(speech) > 1e-4]
    rms = float(np.sqrt(np.mean(voiced**2))) if len(voiced) else 1.0
    speech *= _db(float(rng.uniform(*cfg.speech_rms_db))) / max(rms, 1e-9)

    events: list[EventTiming] = []
    effects = np.zeros(n, np.float32)
    for name, frame in contacts:
        x = synth_event(name, rng, sr) * _db(float(rng.uniform(*cfg.event_peak_db)))
        at = frame * spf
        x = x[: n - at]
        effects[at : at + len(x)] += x
        end = (at + audible_length(x)) / sr
        events.append(EventTiming(name, at / sr, end, frame, frame / cfg.fps))
    bed = synth_ambience(spec.ambience, rng, n, sr) * _db(float(rng.uniform(*cfg.ambience_rms_db)))
    sfx = effects + bed
    mix = speech + sfx
    peak = float(np.abs(mix).max())
    if peak > cfg.mix_headroom:  # scale all stems alike so mix == speech + sfx still holds
        g = cfg.mix_headroom / peak
        speech, sfx, bed, mix = speech * g, sfx * g, bed * g, mix * g

    phonemes = _fill_silence(phon, duration)
    mouth, _ = mouth_track(phonemes, num_frames, cfg.fps, cfg.mouth_smooth_s)
    head, blink, brow = _motion(spec, cfg, rng, words, contacts, num_frames)
    idle = None
    gaze = np.zeros((num_frames, 2))
    smile = np.zeros(num_frames)
    if cfg.idle_motion:  # own generator: the draws above stay those of the classic world
        idle = idle_motion(np.random.default_rng([spec.seed, 2]), cfg, spec.state.kind, num_frames)
        head[:, 1] += idle.head_dy
        gaze, smile = idle.gaze, idle.smile
    props = [e for e, _ in contacts if e in PROPS]
    renderer = FaceRenderer(
        spec.identity, width=cfg.width, height=cfg.height, supersample=cfg.supersample, props=props
    )
    gestures = [(e, f / cfg.fps) for e, f in contacts]
    frames = np.empty((num_frames, cfg.height, cfg.width, 3), np.uint8)
    states: list[FaceState] = []
    for f in range(num_frames):
        state = FaceState(
            head_dx=float(head[f, 0]),
            head_dy=float(head[f, 1]),
            mouth=(float(mouth[f, 0]), float(mouth[f, 1]), float(mouth[f, 2])),
            blink=float(blink[f]),
            brow=float(brow[f]),
            hands=hands_at(f / cfg.fps, gestures, cfg.gesture_approach_s, cfg.gesture_retract_s),
            gaze=(float(gaze[f, 0]), float(gaze[f, 1])),
            smile=float(smile[f]),
        )
        frames[f] = renderer.render(state)
        states.append(state)

    names = [e for e, _ in contacts]
    return Clip(
        spec=spec,
        fps=cfg.fps,
        sample_rate=sr,
        frames=frames,
        speech=speech.astype(np.float32),
        sfx=sfx.astype(np.float32),
        ambience=bed.astype(np.float32),
        mix=mix.astype(np.float32),
        phonemes=phonemes,
        words=words,
        visemes=viseme_track(phonemes),
        mouth=mouth,
        events=events,
        transcript=spec.script.transcript(),
        caption=caption(
            spec.identity.describe(), AMBIENCES[spec.ambience][1], names, spec.state.activity
        ),
        states=states,
        props=props,
        idle=idle,
    )
