"""Real headless Chromium (Debian ``chromium`` driven by Playwright) against the served page."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.server_support import API_KEY, running_server
from unison_stream.benchmarks.browser import CHROMIUM, launch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (/usr/bin/chromium) missing"),
]


async def _stats(page: Any) -> dict[str, Any]:
    out: dict[str, Any] = await page.evaluate("() => window.unison.stats")
    return out


def test_chromium_page_plays_synced_video_and_audio(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async def main() -> dict[str, Any]:
        async with running_server() as srv, async_playwright() as pw:
            with tempfile.TemporaryDirectory(dir=tmp_path) as profile:
                ctx = await launch(pw, profile)
                try:
                    page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                    logs: list[str] = []
                    page.on("console", lambda m: logs.append(m.text))
                    await page.goto(f"{srv.base}/#key={API_KEY}")
                    await page.click("#connect")
                    await page.wait_for_function(
                        "() => (window.unison.stats.framesDecoded || 0) > 10", timeout=20000
                    )
                    await page.fill("#text", "Hello from the browser test, can you hear me")
                    await page.click("#say")
                    await asyncio.sleep(1.0)  # let the jitter buffers settle
                    first = await _stats(page)
                    offsets: list[float] = []
                    samples: list[dict[str, Any]] = []
                    for _ in range(20):  # 10 s
                        await asyncio.sleep(0.5)
                        s = await _stats(page)
                        samples.append(s)
                        if s.get("avOffsetMs") is not None:
                            offsets.append(float(s["avOffsetMs"]))
                    last = await _stats(page)
                    msgs = await page.evaluate("() => window.unison.messages.map(m => m.type)")
                    await page.screenshot(path=str(tmp_path / "page.png"))
                    lag = srv.state.loop_lag.summary()
                finally:
                    await ctx.close()
        trace = [
            (s.get("avOffsetMs"), s.get("videoDelayTargetMs"), s.get("audioBufferNowMs"))
            for s in samples
        ]
        return {
            "first": first,
            "last": last,
            "offsets": offsets,
            "msgs": msgs,
            "trace": trace,
            "logs": logs,
            "lag": lag,
        }

    r = asyncio.run(main())
    print("chromium (offset, video delay, audio buffer) ms", r["trace"])  # shown on a failure
    print("last", r["last"], "server loop lag ms", r["lag"])
    first, last = r["first"], r["last"]
    elapsed = (last["t"] - first["t"]) / 1000.0
    decoded = last["framesDecoded"] - first["framesDecoded"]
    expected = 25.0 * elapsed
    assert decoded >= 0.9 * expected, f"{decoded} frames decoded of {expected:.0f} expected"
    assert last["samplesReceived"] - first["samplesReceived"] >= 0.9 * 48000 * elapsed
    assert last["freezeCount"] == first["freezeCount"] == 0, "video froze"
    assert r["offsets"], f"no estimatedPlayoutTimestamp from Chromium: {last}"
    worst = max(abs(o) for o in r["offsets"])
    assert worst <= 50.0, f"A/V playout offset up to {worst:.0f} ms: {r['offsets']}"
    assert "utterance" in r["msgs"]
