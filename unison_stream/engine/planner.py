"""The planner: text with inline ``<tags>`` → a timed phoneme/event track, sliced per chunk.

For streaming, the model must know which phonemes and events fall in each chunk
(``docs/engine.md`` "Planner"). The planner

1. parses ``"Hello <wave> nice to see you"`` into spoken segments and event tags (unknown tags,
   stray angle brackets, empty or over-long text raise ``ValueError``);
2. times each spoken segment with a :class:`TimingProvider` — espeak-ng's true phoneme times
   (the voices the synthetic world is made of) until the learned duration predictor of the
   training issue replaces it behind the same protocol; a letter-rate fallback where
   libespeak-ng is missing;
3. places every event in a pause between segments the way the synthetic world does
   (``data/synth/clip.py``: a gap of ``event_gap_s``, contact a quarter into it, gestures at
   least ``min_event_spacing_s`` apart) and annotates it the way the world does: a silence
   token over the pause and the event token from the contact (the audio onset) over the
   effect's typical audible length. The model reads a token's time as the middle of its span,
   so a span other than training's moves the sound (a token over the whole pause made snaps
   and claps ~70 ms late and bells ~300 ms early, measured on the test split); the plan's
   transcript keeps the canonical tags inline, as the world's transcripts (whose embedding
   training conditions the gates on) do;
4. answers, per chunk, the track window the chunk sees and which modality leads
   (cross-modal forcing policy, ``docs/engine.md``).

Pure computation: no threads, no torch model calls.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import ClassVar, Protocol

from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.sfx import typical_span_s
from unison_stream.model.conditioning import TimedTrack
from unison_stream.vocab import (
    EVENT_CLASSES,
    MAX_TEXT_CHARS,
    SILENCE_ID,
    canonical_event,
    event_id,
    phoneme_id,
)

__all__ = [
    "LEAD_POLICIES",
    "EspeakTiming",
    "LetterTiming",
    "Planner",
    "TimingProvider",
    "UtterancePlan",
    "default_timing",
    "parse",
]

log = logging.getLogger(__name__)

LEAD_POLICIES: tuple[str, ...] = ("none", "plan")
_WORLD = WorldConfig()
EVENT_GAP_S = sum(_WORLD.event_gap_s) / 2  # the pause that holds one event (world's mean)
_TAG = re.compile(r"<\s*([A-Za-z_]+)\s*>")

Phone = tuple[str, float, float]  # (espeak mnemonic or "_", start s, end s)


class TimingProvider(Protocol):
    """Phoneme timings for one spoken segment (times from 0; pauses labelled ``"_"``)."""

    name: str

    def phonemes(self, text: str) -> list[Phone]: ...


class EspeakTiming:
    """espeak-ng's own phoneme times (``data/synth/speech.py``), trailing pause dropped."""

    name = "espeak"

    def __init__(self, *, voice: str = "en-us", rate: int = 160) -> None:
        self.voice, self.rate = voice, rate

    def phonemes(self, text: str) -> list[Phone]:
        from unison_stream.data.synth.speech import synthesize

        sp = synthesize(text, voice=self.voice, rate=self.rate)
        voiced = [p for p in sp.phonemes if p.label != "_"]
        if not voiced:
            return []
        keep = voiced[-1].end + 0.04  # as the world does: espeak's trailing pause is dropped
        return [(p.label, p.start, min(p.end, keep)) for p in sp.phonemes if p.start < keep]


class LetterTiming:
    """Fixed durations per letter: the front end of last resort (no libespeak-ng)."""

    name = "letters"
    LETTER_S = 0.065
    SPACE_S = 0.05
    _MAP: ClassVar[dict[str, str]] = dict(
        zip(
            "abcdefghijklmnopqrstuvwxyz",
            [
                "a",
                "b",
                "k",
                "d",
                "E",
                "f",
                "g",
                "h",
                "I",
                "dZ",
                "k",
                "l",
                "m",
                "n",
                "0",
                "p",
                "k",
                "r",
                "s",
                "t",
                "V",
                "v",
                "w",
                "k",
                "j",
                "z",
            ],
            strict=True,
        )
    )

    def phonemes(self, text: str) -> list[Phone]:
        out: list[Phone] = []
        t = 0.0
        for ch in text.lower():
            if ch.isalpha():
                out.append((self._MAP.get(ch, "@"), t, t + self.LETTER_S))
                t += self.LETTER_S
            elif ch.isspace() or ch in ",.;:!?":
                out.append(("_", t, t + self.SPACE_S))
                t += self.SPACE_S
        return out


def default_timing() -> TimingProvider:
    """espeak-ng timings where libespeak-ng loads, else the letter-rate fallback."""
    from unison_stream.data.synth import speech

    if speech.available():
        return EspeakTiming()
    log.warning("libespeak-ng unavailable: planning with the letter-rate fallback")
    return LetterTiming()


Segments = list[tuple[str, str | None]]  # parsed text: (words, the event tag after them)


def parse(text: str, *, max_chars: int = MAX_TEXT_CHARS) -> Segments:
    """Split ``text`` into ``(spoken segment, event class or None)`` pairs, validating it.

    Each pair is a segment followed by the event tagged after it. Raises ``ValueError`` naming
    the problem: unknown tag, stray ``<``/``>``, empty text, more than ``max_chars``.
    """
    if len(text) > max_chars:
        raise ValueError(f"text is {len(text)} characters; at most {max_chars} per utterance")
    out: list[tuple[str, str | None]] = []
    pos = 0
    for m in _TAG.finditer(text):
        out.append((_clean(text[pos : m.start()]), canonical_event(m.group(1))))
        pos = m.end()
    out.append((_clean(text[pos:]), None))
    out = [(s, e) for s, e in out if s or e]
    if not out:
        raise ValueError("nothing to say: the text has no words and no tags")
    return out


def transcript(segments: Segments) -> str:
    """The words and ``<event>`` tags of ``parse``'s segments, as the model is conditioned on
    (known before timing, so its embedding can be computed meanwhile)."""
    return " ".join(
        part for seg, event in segments for part in (seg, f"<{event}>" if event else "") if part
    )


def _clean(segment: str) -> str:
    if "<" in segment or ">" in segment:
        raise ValueError(f"malformed tag in {segment.strip()!r}: tags look like <clap>")
    return " ".join(segment.split())


@dataclass(frozen=True)
class UtterancePlan:
    """A timed utterance: the track (times from the utterance start) and its events."""

    # words with canonical inline tags, as the world writes transcripts ("Hi <clap> bye"):
    # the text whose embedding (c_s, which drives the SCG gates) training conditions on
    transcript: str
    track: TimedTrack
    contacts: tuple[tuple[str, float], ...]  # (event class, contact time s)
    duration_s: float

    def num_chunks(self, chunk_s: float) -> int:
        return max(1, math.ceil(self.duration_s / chunk_s - 1e-9))

    def window(self, k: int, chunk_s: float, margin_s: float) -> TimedTrack:
        """Track slice seen by the utterance's chunk ``k`` (times relative to its start)."""
        return self.track.window(k * chunk_s, (k + 1) * chunk_s, margin_s)

    def lead(self, k: int, chunk_s: float, policy: str, lead_steps: int) -> tuple[str, int]:
        """Who leads chunk ``k`` under ``policy`` ("none": joint; "plan": from content)."""
        if policy == "none" or lead_steps == 0:
            return "none", 0
        t0, t1 = k * chunk_s, (k + 1) * chunk_s
        if any(t0 <= c < t1 for _, c in self.contacts):
            return "video", lead_steps  # an action: the visible contact drives the sound
        voiced = sum(
            max(0.0, min(e, t1) - max(s, t0))
            for i, s, e in zip(self.track.ids, self.track.start, self.track.end, strict=True)
            if i != SILENCE_ID and i not in _EVENT_IDS
        )
        if voiced > 0.5 * chunk_s:
            return "audio", lead_steps  # speech-heavy: the voice drives the lips
        return "none", 0


_EVENT_IDS = frozenset(event_id(e) for e in EVENT_CLASSES)


class Planner:
    """Turns a say request into an :class:`UtterancePlan` (see the module docstring)."""

    def __init__(
        self,
        *,
        timing: TimingProvider | None = None,
        max_chars: int = MAX_TEXT_CHARS,
        max_seconds: float = 60.0,
        tail_s: float = 0.16,
    ) -> None:
        self.timing = timing if timing is not None else default_timing()
        self.max_chars, self.max_seconds, self.tail_s = max_chars, max_seconds, tail_s
        for name in EVENT_CLASSES:  # ~0.8 s once per process: here, not in a say's planning
            typical_span_s(name, _WORLD.sample_rate)

    def validate(self, text: str) -> Segments:
        """Cheap checks run in the caller's thread (``say`` raises on them)."""
        return parse(text, max_chars=self.max_chars)

    def plan(self, text: str) -> UtterancePlan:
        """Time ``text``: phonemes from the timing provider, events in pauses between them."""
        return self.plan_segments(self.validate(text))

    def plan_segments(self, segments: Segments) -> UtterancePlan:
        """Time text already parsed by :meth:`validate` (a ``say`` parses its text once)."""
        ids: list[int] = []
        start: list[float] = []
        end: list[float] = []
        contacts: list[tuple[str, float]] = []
        t, last_contact = 0.0, -math.inf
        for seg, event in segments:
            if seg:
                phones = self.timing.phonemes(seg)
                for label, s, e in phones:
                    ids.append(SILENCE_ID if label == "_" else phoneme_id(label))
                    start.append(t + s)
                    end.append(t + e)
                t = end[-1] if phones else t
            if event is not None:
                contact = max(
                    t + 0.25 * EVENT_GAP_S,
                    last_contact + _WORLD.min_event_spacing_s,
                    _WORLD.gesture_approach_s,  # the hand needs this long to reach contact
                )
                gap_end = max(t + EVENT_GAP_S, contact + 0.15)
                # as the world annotates it (so as training saw it): a silence over the pause,
                # and the event's token from its onset over its typical audible length
                ids += [SILENCE_ID, event_id(event)]
                start += [t, contact]
                end += [gap_end, contact + typical_span_s(event, _WORLD.sample_rate)]
                contacts.append((event, contact))
                last_contact, t = contact, gap_end
        duration = t + self.tail_s
        if contacts:  # let the last gesture finish and the effect ring (as the world does)
            duration = max(duration, last_contact + _WORLD.gesture_retract_s + 0.1)
        if duration > self.max_seconds:
            raise ValueError(f"utterance lasts {duration:.1f} s; at most {self.max_seconds} s")
        track = TimedTrack(tuple(ids), tuple(start), tuple(end))
        return UtterancePlan(transcript(segments), track, tuple(contacts), duration)
