"""The seam between a stream and the server's media clock: the stream's buffer policy on a
simulated clock, and the clock's one verb (``next_media``) against a scripted source."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import numpy as np

from unison_stream.engine.readiness import Readiness
from unison_stream.engine.types import Held, MediaChunk
from unison_stream.server.media import MediaClock

CHUNK_S = 0.32


def _simulate(max_prebuffer_s: float, period_s: float = 0.64) -> tuple[int, int]:
    """A stream making a 0.32 s chunk every ``period_s`` says one 2.56 s utterance (8 chunks);
    the consumer asks every 40 ms slot and plays each chunk for 0.32 s. (silence slots cut
    into the utterance, slot its first chunk started on)."""
    r = Readiness(CHUNK_S, 0.04, ahead=4)
    r.configure(ahead_s=1.0, max_prebuffer_s=max_prebuffer_s)
    for _ in range(6):  # idle chunks at the stream's pace: the measured production
        r.taken(period_s, idle=True)
    made: list[float] = []  # when each of the utterance's chunks was made
    t, slot, first, playing_until, cut, k = 0.0, 0, -1, 0.0, 0, 0
    while slot < 25 * 16:
        while len(made) < 8 and len(made) * period_s + period_s <= t + 1e-9:
            made.append(len(made) * period_s + period_s)
        if t >= playing_until - 1e-9 and k < 8:
            if first < 0 and made:
                held = r.may_start(
                    "u", utterance_s=2.56, made_at=made[0], made=len(made), queued=len(made), now=t
                )
                if held is None:
                    first, k, playing_until = slot, 1, t + CHUNK_S
                    r.taken(period_s, idle=False)
            elif first >= 0:
                if len(made) > k:
                    k += 1
                    playing_until = t + CHUNK_S
                else:
                    cut += 1
        slot += 1
        t += 0.04
    return cut, first


def test_the_stream_waits_for_a_slow_production_instead_of_cutting_the_words() -> None:
    cut, first = _simulate(max_prebuffer_s=0.0)  # start at once
    assert cut > 0
    cut, first_buffered = _simulate(max_prebuffer_s=4.0)
    assert cut == 0, "silence was cut into the utterance"
    # the wait is what half real time needs (7 chunks come 0.32 s late each: 2.24 s), not more
    assert first_buffered - first == round(25 * 2.24)


def test_the_stream_adds_no_wait_when_it_keeps_ahead() -> None:
    assert _simulate(max_prebuffer_s=4.0, period_s=0.16) == _simulate(0.0, period_s=0.16)


class _Source:
    """A scripted stream: ``next_media`` hands out what was queued (``Held`` when told)."""

    def __init__(self) -> None:
        self.queue: deque[MediaChunk | Held] = deque()
        self.asked: list[tuple[float, bool]] = []

    def make(self, uid: str | None, frames: int = 2) -> None:
        video = np.zeros((frames, 8, 8, 3), np.uint8)
        audio = np.full(frames * 640, 0.5 if uid else 0.0, np.float32)
        state = "speaking" if uid else "idle"
        self.queue.append(MediaChunk(0, 0.0, video, audio, utterance_id=uid, state=state))

    def next_media(self, start_s: float, *, over_idle: bool = False) -> Any:
        self.asked.append((start_s, over_idle))
        if not self.queue:
            return None
        head = self.queue[0]
        if isinstance(head, Held):
            return head
        if over_idle and head.utterance_id is None:
            return None
        self.queue.popleft()
        return MediaChunk(0, start_s, head.video, head.audio, None, None, head.utterance_id)

    def set_buffer(self, *, ahead_s: float, max_prebuffer_s: float) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return {"buffer_ms": 0.0}


def _clock(src: _Source) -> MediaClock:
    return MediaClock(src, fps=25.0, width=8, height=8, sample_rate=16000, buffer_s=1.0)


def test_a_reply_cuts_the_idle_chunk_in_playout_and_a_held_one_lets_it_play() -> None:
    src = _Source()
    clock = _clock(src)
    src.make(None, frames=4)
    assert clock.slot(0).utterance_id is None
    src.queue.append(Held("u1", 0.5))
    assert clock.slot(1).utterance_id is None and clock.prebuffer_slots == 0  # idle goes on
    src.queue.popleft()
    src.make("u1")
    assert clock.slot(2).utterance_id == "u1" and clock.idle_dropped == 2
    clock.slot(3)
    assert src.asked == [(0.0, False), (0.04, True), (0.08, True)]  # none in speech
    src.queue.append(Held("u2", 0.5))
    clock.slot(5)
    assert clock.prebuffer_slots == 2 and clock.underruns == 0 and clock.wait_s == 0.5


def test_the_clock_counts_silence_cut_into_an_utterance_not_after_it() -> None:
    src = _Source()
    clock = _clock(src)
    src.make("u1")
    clock.slot(4)  # 2 slots of speech, 3 idle
    src.make("u1")
    clock.slot(6)
    assert (clock.speech_underruns, clock.underruns) == (3, 3)
    clock.slot(10)
    assert (clock.speech_underruns, clock.underruns) == (3, 7)
    assert clock.traces["u1"]["in_clock"] <= clock.traces["u1"]["played"]


def test_an_interrupt_cuts_the_slot_in_playout_at_the_next_audio_frame() -> None:
    """A cut lands on the 20 ms audio frame after what the track sent, not the 40 ms slot's
    end: a 5 ms fade, then silence; a cut on a slot boundary or in idle cuts nothing."""
    from unison_stream.server.media import CUT_FADE, Playout

    async def main() -> None:
        src = _Source()
        clock = _clock(src)
        src.make("u1", frames=4)  # speech at 0.5
        playout = Playout(clock)
        await playout.wait(0.0)  # the tracks start
        assert playout.audio_sent() == 0
        spoken = playout.audio(0, 960)  # the first half of slot 0
        assert playout.audio_sent() == 960 and float(np.abs(spoken[480:]).min()) > 0.4
        assert not clock.silence_from(1920)  # the next slot's start: nothing to cut here
        clock.flush()
        assert clock.silence_from(960)
        rest = playout.audio(960, 960)
        assert float(rest[0]) > 0.4 and bool(np.all(np.diff(rest[:CUT_FADE]) <= 0))
        assert not rest[CUT_FADE:].any(), "speech after the cut"
        assert playout.audio_pts(960) == 960
        assert playout.audio_pts(1 * clock.samples_per_slot) == 1920  # slot 1's first sample
        src.make(None, frames=1)
        playout.audio(1920, 960)  # an idle slot: nothing to cut
        assert not clock.silence_from(1920 + 480)

    asyncio.run(main())
