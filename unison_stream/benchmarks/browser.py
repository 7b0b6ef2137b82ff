"""The ``chromium`` phase of ``bench serve``: the served page in headless Chromium (Debian's
``/usr/bin/chromium`` driven by Playwright, both dev dependencies), measured from inside the
page: ``say`` → Chromium's audio playout reaching the utterance's first sample, ``interrupt``
→ reaching the first sample after the cut (``estimatedPlayoutTimestamp`` of the audio receiver
against the sender's time of those samples, which the server names in ``started`` /
``interrupted``), the server's underruns during speech and the page's A/V playout offsets
(video − audio) while it speaks. ``hops_ms``: the server's ``trace_ms`` of each utterance
(medians) and ``audible`` (the say → heard figure); ``heard_after_sent_ms``: the client's last
hop, the first slot's sending (server wall clock, same host) → Chromium playing it (network,
jitter buffer and audio output).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from unison_sdk.protocol import UtteranceEvent, UtteranceEventName

from unison_stream.server.media import HOPS

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "chromium_phase", "launch"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [  # headless loopback viewer: docs/server.md, "Loopback and other machines"
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
TEXT = "This is a long sentence for the benchmark to interrupt half way through, " * 3

NTP_EPOCH_OFFSET_S = 2208988800  # NTP seconds at the Unix epoch (RFC 5905)
# the wire names the trial reads, from the protocol module (the page script sends what it sends)
_STARTED: UtteranceEventName = "started"  # typed: mypy checks each against the protocol's
_CUT: UtteranceEventName = "interrupted"
_NAMES = {"utterance": UtteranceEvent.TYPE, "started": _STARTED, "interrupted": _CUT}

# in the page: when Chromium's audio playout (``estimatedPlayoutTimestamp``, the sender's NTP
# time of the sample now playing) reaches the instant the server sent the first slot of an
# utterance (``sent_at_unix_s`` of ``started``) or the first slot after a cut (``interrupted``)
_TRIAL_JS = """
async ([text, ntpOffsetS, names]) => {
  const u = window.unison;  // the served page (static/app.js): it speaks the protocol
  const isEvent = (m, event, id) => m.type === names.utterance && m.event === event && m.id === id;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const playout = async () => {
    let p = null;
    (await u.pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio") p = r.estimatedPlayoutTimestamp;
    });
    return p;
  };
  const message = async (pred) => {
    for (let i = 0; i < 6000; i++) {
      const m = u.messages.find(pred);
      if (m) return m;
      await sleep(5);
    }
    return null;
  };
  const reached = async (unixS) => {
    const ntpMs = (unixS + ntpOffsetS) * 1000;
    for (let i = 0; i < 3000; i++) {
      const p = await playout();
      if (p && p >= ntpMs) return performance.now();
      await sleep(5);
    }
    return null;
  };
  const t0 = performance.now();
  const id = u.say(text);
  const started = await message((m) => isEvent(m, names.started, id));
  const on = started ? await reached(started.sent_at_unix_s) : null;
  await sleep(1000);
  const t1 = performance.now();
  document.getElementById("interrupt").click();  // the page's own button
  const cut = await message((m) => isEvent(m, names.interrupted, id) && m.sent_at_unix_s);
  const off = cut ? await reached(cut.sent_at_unix_s) : null;
  // the client's last hop: the first slot sent (server wall clock, same host) → heard here
  const heard = on === null ? null : performance.timeOrigin + on - 1000 * started.sent_at_unix_s;
  return { first: on === null ? null : on - t0, interrupt: off === null ? null : off - t1,
           trace: started ? started.trace_ms || {} : {}, heardAfterSent: heard };
}
"""


async def launch(pw: Any, profile: str) -> Any:
    """Debian's headless Chromium with the flags above and a fresh profile (a Playwright
    persistent context; ``pw`` is ``async_playwright()``'s value)."""
    return await pw.chromium.launch_persistent_context(
        profile,
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_FLAGS,
        env={**os.environ, "HOME": profile},
    )


async def chromium_phase(base: str, key: str, trials: int) -> dict[str, Any]:
    """``trials`` say/interrupt rounds in the served page; figures as the module says."""
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():
        raise SystemExit(f"bench serve --chromium needs {CHROMIUM} (Debian package chromium)")
    async with async_playwright() as pw:
        with tempfile.TemporaryDirectory() as profile:
            ctx = await launch(pw, profile)
            try:
                page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                await page.goto(f"{base}/#key={key}")
                await page.click("#connect")
                await page.wait_for_function(
                    "() => (window.unison.stats.framesDecoded || 0) > 10", timeout=60000
                )
                await asyncio.sleep(3.0)  # the idle stream and the lip-sync trim settle
                under0 = await _server_stat(page, "speech_underruns")
                offsets: list[float] = []
                sampler = asyncio.ensure_future(_offsets(page, offsets))
                rows = []
                for _ in range(trials):
                    args = [TEXT, NTP_EPOCH_OFFSET_S, _NAMES]
                    rows.append(await page.evaluate(_TRIAL_JS, args))
                    await asyncio.sleep(1.0)
                sampler.cancel()
                await asyncio.sleep(1.5)  # the next stats message from the server
                under = await _server_stat(page, "speech_underruns") - under0
            finally:
                await ctx.close()
    first = [r["first"] for r in rows if r["first"] is not None]
    heard = [r["heardAfterSent"] for r in rows if r["heardAfterSent"] is not None]
    hops = [h for h in HOPS if any(h in r["trace"] for r in rows)]
    hop_ms = {k: statistics.median(r["trace"][k] for r in rows if k in r["trace"]) for k in hops}
    inter = [r["interrupt"] for r in rows if r["interrupt"] is not None]
    first_ms = statistics.median(first) if first else None
    return {
        "first_media_ms": first_ms,
        "first_media_ms_all": [round(x, 1) for x in first],
        "hops_ms": hop_ms if first_ms is None else {**hop_ms, "audible": first_ms},
        "heard_after_sent_ms": statistics.median(heard) if heard else None,
        "heard_after_sent_ms_all": [round(x, 1) for x in heard],
        "interrupt_ms": statistics.median(inter) if inter else None,
        "trials_heard": len(first),
        "underrun_slots_during_speech": under,
        "av_offset_ms_median": statistics.median(offsets) if offsets else None,
        "av_offset_ms_max_abs": max((abs(x) for x in offsets), default=None),
    }


async def _server_stat(page: Any, key: str) -> float:
    v = await page.evaluate(f"() => (window.unison.serverStats || {{}})[{key!r}] || 0")
    return float(v)


async def _offsets(page: Any, out: list[float]) -> None:
    while True:
        await asyncio.sleep(0.5)
        v = await page.evaluate("() => window.unison.stats.avOffsetMs")
        if v is not None:
            out.append(float(v))
