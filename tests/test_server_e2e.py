"""In-process end to end: aiohttp server + fake engine ↔ aiortc client over loopback."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
from unison_sdk.protocol import Say

from tests.server_support import connect, running_server


def test_say_streams_events_in_order_and_media_at_25fps_48khz() -> None:
    async def main() -> None:
        async with running_server() as srv:
            c = await connect(srv.base)
            try:
                await c.wait_for(lambda m: m["type"] == "stats", 5)
                while len(c.video) < 10:  # media flowing before we speak
                    await asyncio.sleep(0.05)
                await c.send(Say("u1", "Hello there, nice to see you"))
                await c.wait_for(lambda m: m.get("id") == "u1" and m.get("event") == "finished", 10)
                await asyncio.sleep(0.5)
                v0, a0 = len(c.video), len(c.audio)
                await asyncio.sleep(2.0)
                v1, a1 = len(c.video), len(c.audio)
            finally:
                await c.close()
        events = [m["event"] for m in c.of_type("utterance") if m["id"] == "u1"]
        assert events == ["queued", "started", "finished"], events
        assert [m["state"] for m in c.of_type("state")][:2] == ["speaking", "idle"]
        # rates over a 2 s window: 25 fps video, 50 audio frames/s of 960 samples at 48 kHz
        assert 40 <= v1 - v0 <= 60, (v0, v1)
        assert 80 <= a1 - a0 <= 120, (a0, a1)
        vp = [p for _, p in c.video]
        ap = [p for _, p, _, _ in c.audio]
        assert all(b > a for a, b in itertools.pairwise(vp)), "video pts not increasing"
        assert all(b > a for a, b in itertools.pairwise(ap)), "audio pts not increasing"
        assert {r for *_, r in c.audio} == {48000}
        steps = np.diff(vp)
        assert np.median(steps) == 3600, np.median(steps)  # 90 kHz / 25 fps
        # audible: the 440 Hz tone (amplitude 0.5 → rms ≈ 0.35 through Opus) while speaking
        rms = np.array([r for _, _, r, _ in c.audio])
        loud = rms > 0.1
        assert loud.sum() >= 40, f"only {loud.sum()} audible 20 ms frames"  # ≥ 0.8 s of speech
        assert (rms < 0.01).sum() >= 50, "silence before/after the utterance"
        stats = c.of_type("stats")[-1]
        assert {"rtf", "buffer_ms", "underruns"} <= set(stats)

    asyncio.run(main())
