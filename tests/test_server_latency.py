"""The served path's latency budget: hop traces on ``started`` and an event loop that nothing
heavy blocks (docs/server.md "Latency budget")."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from unison_sdk.protocol import Say

from tests.server_support import connect, create_session, running_server
from unison_stream.config import load_config
from unison_stream.engine import Engine
from unison_stream.server.media import HOPS
from unison_stream.server.session import MediaSpec


def test_started_event_carries_the_hop_trace_of_the_first_chunk() -> None:
    async def main() -> dict[str, float]:
        async with running_server() as srv:
            c = await connect(srv.base)
            try:
                await c.send(Say("u1", "hello there"))
                ev = await c.wait_for(
                    lambda m: m.get("type") == "utterance" and m.get("event") == "started", 10
                )
            finally:
                await c.close()
        trace: dict[str, float] = ev["trace_ms"]
        return trace

    trace = asyncio.run(main())
    assert list(trace) == [h for h in HOPS if h in trace], trace  # in the order of the path
    assert {"queued", "generated", "decoded", "in_clock", "played"} <= set(trace), trace
    values = list(trace.values())
    assert values == sorted(values) and values[0] >= 0.0, trace
    assert trace["played"] < 5000.0, trace


def test_loop_stays_responsive_while_a_session_opens_with_the_real_engine() -> None:
    cfg = load_config("tiny")  # the bundled model: an open takes 0.2-0.4 s (portrait, codec)
    m = cfg.media
    media = MediaSpec(fps=m.fps, width=m.width, height=m.height, sample_rate=m.sample_rate)

    async def main() -> tuple[float, dict[str, float]]:
        with Engine(cfg, max_sessions=2) as engine:
            engine.wait_ready()  # as `serve` does
            async with running_server(engine, media) as srv:
                await create_session(srv.base)  # a first stream, whose media must not stall
                await asyncio.sleep(1.0)
                lag = srv.state.loop_lag
                lag.reset()
                t0 = time.monotonic()
                await create_session(srv.base)
                open_s = time.monotonic() - t0
                await asyncio.sleep(0.1)
                return open_s, lag.summary()

    open_s, lag = asyncio.run(main())
    print("open", open_s, "loop lag", lag)
    # run on the loop, the open would stall the ticker (and the first stream) for all of it:
    # the lag would be the open's whole time (0.07-0.4 s); off the loop it is 3-10 ms
    assert lag["ticks"] >= 5, lag
    assert lag["max"] < max(25.0, min(100.0, 0.5 * 1000 * open_s)), (open_s, lag)


class _Source:
    """A scripted engine session output for the clock: chunks made on a (simulated) clock,
    taken without waiting, at most ``ahead`` waiting (``ChunkSource``)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.queue: deque[Any] = deque()
        self.ahead = 2
        self.now = now
        self.starts: list[float] = []  # media times the clock placed each chunk at

    def make(
        self, uid: str | None, frames: int = 2, utterance_s: float = 0.0, took: float = 0.0
    ) -> None:
        from unison_stream.server.fake_engine import FakeChunk

        video = np.zeros((frames, 8, 8, 3), np.uint8)
        audio = np.zeros(frames * 640, np.float32)
        t = self.now()
        times = {"wanted": t - took, "decoded": t}
        state = "speaking" if uid else "idle"
        self.queue.append(
            FakeChunk(0, 0.0, video, audio, None, None, uid, state, times, utterance_s)
        )

    def take_chunk(self, start_s: float | None = None) -> Any:
        if not self.queue:
            return None
        self.starts.append(start_s or 0.0)
        return self.queue.popleft()

    def queued(self) -> list[Any]:
        from unison_stream.server.fake_engine import FakeQueued

        return [FakeQueued(c.utterance_id, c.times["decoded"], c.utterance_s) for c in self.queue]

    def set_ahead(self, chunks: int) -> None:
        self.ahead = chunks


def _clock(src: _Source, buffer_s: float = 1.0, **kw: Any) -> Any:
    from unison_stream.server.media import MediaClock

    return MediaClock(src, fps=25.0, width=8, height=8, sample_rate=16000, buffer_s=buffer_s, **kw)


def test_clock_counts_silence_cut_into_an_utterance_not_after_it() -> None:
    src = _Source()
    clock = _clock(src)
    n = 0

    def play(slots: int) -> None:
        nonlocal n
        clock.slot(n + slots - 1)
        n += slots

    src.make("u1", utterance_s=0.16)
    play(2)
    play(3)  # nothing made mid-utterance: 3 idle slots
    src.make("u1", utterance_s=0.16)
    play(2)
    assert (clock.speech_underruns, clock.underruns) == (3, 3)
    play(4)  # after the utterance's last chunk: idle, but nothing was cut
    src.make(None)
    play(2)
    assert (clock.speech_underruns, clock.underruns) == (3, 7)
    assert clock.traces["u1"]["in_clock"] <= clock.traces["u1"]["played"]
    # one timeline: each chunk is placed at the media time of the slot it starts on
    assert src.starts == [0.0, 0.2, 0.44]


def _simulate(max_prebuffer_s: float, period_s: float = 0.64) -> tuple[int, int, int]:
    """An engine at half real time (a 0.32 s chunk every 0.64 s) saying one 2.56 s utterance
    after six idle chunks, played out in simulated time; (speech underruns, prebuffer slots,
    slot of the utterance's first sample)."""
    t = 0.0
    src = _Source(now=lambda: t)
    clock = _clock(src, max_prebuffer_s=max_prebuffer_s, now=lambda: t)
    chunks = [None] * 6 + ["u1"] * 8 + [None] * 6  # 8 chunks of 0.32 s: 2.56 s of speech
    busy_from, slot, first = 0.0, 0, -1
    while chunks or slot < 25 * 16:
        if len(src.queue) >= src.ahead:  # full: the engine waits for room
            busy_from = t
        elif chunks and t >= busy_from + period_s - 1e-9:
            uid = chunks.pop(0)
            src.make(uid, frames=8, utterance_s=2.56 if uid else 0.0, took=t - busy_from)
            busy_from = t
        s = clock.slot(slot)
        if s.utterance_id == "u1" and first < 0:
            first = slot
        slot += 1
        t += 0.04
    return clock.speech_underruns, clock.prebuffer_slots, first


def test_buffer_policy_prebuffers_a_slow_engine_instead_of_cutting_the_words() -> None:
    cut, waited, first = _simulate(max_prebuffer_s=0.0)  # start at once, as before
    assert cut > 0 and waited == 0
    cut, waited, first_buffered = _simulate(max_prebuffer_s=4.0)
    assert cut == 0, "silence was cut into the utterance"
    assert waited > 0 and first_buffered > first  # it started later instead
    # the wait is what half real time needs (the last chunk comes 7 · 0.32 s late: 2.24 s),
    # not the whole utterance (4.48 s)
    assert first_buffered - first == round(25 * 2.24)


def test_buffer_policy_adds_no_latency_when_the_engine_keeps_ahead() -> None:
    # a chunk every 0.16 s (2× real time) on an even pace: no jitter, no shortfall, no wait
    at_once = _simulate(max_prebuffer_s=0.0, period_s=0.16)
    policy = _simulate(max_prebuffer_s=4.0, period_s=0.16)
    assert policy == (0, 0, at_once[2]) and at_once[0] == 0


def test_speech_arriving_behind_idle_skips_it() -> None:
    """The idle chunk in playout when a reply's first chunk is made is cut short: the reply
    plays at the next slot, not after it (the engine drops idle chunks queued before it)."""
    src = _Source()
    clock = _clock(src, buffer_s=2.0)
    src.make(None, frames=4)
    clock.slot(0)  # the idle chunk plays
    src.make("u1", utterance_s=0.08)
    assert clock.slot(1).utterance_id == "u1"
    assert clock.idle_dropped == 3
    src.make(None)  # idle after the reply stays: it plays after it
    src.make("u2", utterance_s=0.08)
    assert [clock.slot(k).utterance_id for k in range(2, 5)] == ["u1", None, "u2"]
    assert clock.idle_dropped == 3 + 1
    assert clock.buffer_ms == 1 * 40  # the rest of u2's chunk


def test_an_interrupt_cuts_the_slot_in_playout_at_the_next_audio_frame() -> None:
    """A cut lands on the 20 ms audio frame after what the track sent, not the 40 ms slot's
    end: a 5 ms fade, then silence; a cut on a slot boundary or in idle cuts nothing."""
    from unison_stream.server.media import CUT_FADE, Playout

    async def main() -> None:
        src = _Source()
        clock = _clock(src)
        src.make("u1", frames=4, utterance_s=0.16)
        src.queue[-1].audio[:] = 0.5
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
