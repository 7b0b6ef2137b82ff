"""The planner: tag parsing and validation, timed tracks, per-chunk windows and lead policy."""

from __future__ import annotations

import numpy as np
import pytest

from unison_stream.data.synth import speech
from unison_stream.data.synth.sfx import audible_length, synth_event, typical_span_s
from unison_stream.engine.planner import EspeakTiming, LetterTiming, Planner, parse, transcript
from unison_stream.vocab import SILENCE_ID, event_id


def test_parse_splits_segments_and_tags_and_canonicalises_aliases() -> None:
    assert parse("Hello <wave> nice to see you <clap>") == [
        ("Hello", "whoosh"),
        ("nice to see you", "clap"),
    ]
    assert parse("<clap>") == [("", "clap")]
    assert parse("  just   words ") == [("just words", None)]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Hi <dance>", "unknown event tag <dance>"),
        ("Hi <clap", "malformed tag"),
        ("a > b", "malformed tag"),
        ("   ", "nothing to say"),
        ("x" * 601, "at most 600"),
    ],
)
def test_bad_text_is_a_clear_value_error(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Planner(timing=LetterTiming()).plan(text)


def test_plan_places_events_in_pauses_and_covers_the_track() -> None:
    plan = Planner(timing=LetterTiming()).plan("Hi there <clap> and bye <snap>")
    tr = plan.track
    assert plan.transcript == "Hi there <clap> and bye <snap>", "the world's transcript form"
    assert Planner(timing=LetterTiming()).plan("<wave> Hi").transcript == "<whoosh> Hi"
    # known before timing (the engine embeds it while the words are timed)
    assert transcript(parse("Hi there <clap> and bye <snap>")) == plan.transcript
    assert all(b >= a for a, b in zip(tr.start, tr.start[1:], strict=False)), "sorted in time"
    assert all(e >= s for s, e in zip(tr.start, tr.end, strict=True))
    (e1, c1), (e2, c2) = plan.contacts
    assert (e1, e2) == ("clap", "snap")
    assert c2 - c1 >= 0.9 - 1e-9, "gestures never overlap (world's min spacing)"
    for name, contact in plan.contacts:  # annotated as the world (and so training) does it
        i = tr.ids.index(event_id(name))
        assert tr.start[i] == contact, "the event token starts at the contact (audio onset)"
        assert tr.end[i] - tr.start[i] == pytest.approx(typical_span_s(name, 16000))
        pause = [
            k for k, (j, s, e) in enumerate(zip(tr.ids, tr.start, tr.end, strict=True))
            if j == SILENCE_ID and s < contact < e
        ]  # fmt: skip
        assert pause, "a silence token spans the pause that holds the event"
    assert plan.duration_s >= max(tr.end) and plan.duration_s >= c2 + 0.36


def test_typical_span_is_the_median_audible_length_the_world_annotates() -> None:
    """Spans differ by class (a snap rings ~50 ms, a bell ~0.9 s); the planner's token must
    carry the class's own, as the world's ``audio_end`` does."""
    rng = np.random.default_rng(7)
    for name, lo, hi in (("snap", 0.03, 0.08), ("clap", 0.06, 0.16), ("bell", 0.6, 0.91)):
        lengths = [audible_length(synth_event(name, rng, 16000)) / 16000 for _ in range(32)]
        assert lo <= typical_span_s(name, 16000) <= hi
        assert abs(typical_span_s(name, 16000) - float(np.median(lengths))) < 0.25 * (hi - lo)


def test_window_is_relative_to_the_chunk_and_lead_follows_the_plan() -> None:
    plan = Planner(timing=LetterTiming()).plan("Hello there my friend <clap>")
    cs = 0.32
    w = plan.window(1, cs, 0.0)
    assert len(w) > 0 and min(w.start) >= -0.1 and max(w.start) <= cs
    clap_chunk = int(plan.contacts[0][1] // cs)
    assert plan.lead(clap_chunk, cs, "plan", 1) == ("video", 1)
    assert plan.lead(0, cs, "plan", 1) == ("audio", 1), "speech-heavy chunk: audio leads"
    assert all(plan.lead(k, cs, "none", 1) == ("none", 0) for k in range(plan.num_chunks(cs)))
    assert plan.lead(0, cs, "plan", 0) == ("none", 0), "lead_steps 0 is joint sampling"


@pytest.mark.skipif(not speech.available(), reason="libespeak-ng missing")
def test_espeak_timing_gives_real_phonemes() -> None:
    plan = Planner(timing=EspeakTiming()).plan("Hello <wave> nice to see you")
    voiced = [i for i in plan.track.ids if i not in (SILENCE_ID, event_id("wave"))]
    assert len(voiced) >= 8
    assert 0.8 < plan.duration_s < 4.0
