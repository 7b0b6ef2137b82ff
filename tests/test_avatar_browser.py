"""The served page in real headless Chromium with the real engine (bundled ``tiny``): the
designer draws a live preview through the design endpoint, an uploaded picture is saved and
picked, and the session the page opens shows it — the first frame of the model the page
decodes matches the normalised upload at SSIM ≥ 0.8 outside the mouth (docs/avatars.md)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.server_support import API_KEY, running_server
from tests.test_avatar_session import (
    CFG,
    HAVE_CODEC,
    PLACEHOLDER_STD,
    SSIM_BAR,
    ssim_outside_mouth,
    upload_bytes,
)
from unison_stream.avatars import from_upload
from unison_stream.benchmarks.browser import CHROMIUM, launch
from unison_stream.engine import Engine
from unison_stream.server.session import MediaSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (/usr/bin/chromium) missing"),
    pytest.mark.skipif(not HAVE_CODEC, reason="no trained video codec weights"),
]

# the video element's current frame at its own size, as RGB bytes, and how flat it is
GRAB = """() => {
  const v = document.getElementById("video");
  if (!v.videoWidth) return null;
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext("2d");
  g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const rgb = [];
  for (let i = 0; i < d.length; i += 4) rgb.push(d[i], d[i + 1], d[i + 2]);
  return { w: c.width, h: c.height, rgb };
}"""


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine(CFG, max_sessions=1)
    eng.wait_ready()
    yield eng
    eng.close()


async def _first_face(page: Any, timeout_s: float) -> np.ndarray:
    """The first decoded frame of the model (the server's grey placeholder skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        got = await page.evaluate(GRAB)
        if got is not None:
            frame = np.array(got["rgb"], np.uint8).reshape(got["h"], got["w"], 3)
            if float(frame.std()) > PLACEHOLDER_STD:
                return frame
        await asyncio.sleep(0.05)
    raise TimeoutError("no frame of the model in the page")


def test_page_designs_uploads_picks_and_shows_the_avatar(engine: Engine, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    m = CFG.media
    media = MediaSpec(fps=m.fps, width=m.width, height=m.height, sample_rate=m.sample_rate)
    picture = tmp_path / "me.jpg"
    picture.write_bytes(upload_bytes())
    expected = from_upload(upload_bytes()).picture

    async def main() -> dict[str, Any]:
        async with (
            running_server(engine, media, avatar_dir=str(tmp_path / "store")) as srv,
            async_playwright() as pw,
        ):
            with tempfile.TemporaryDirectory(dir=tmp_path) as profile:
                ctx = await launch(pw, profile)
                try:
                    page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                    await page.goto(f"{srv.base}/#key={API_KEY}")
                    # the designer: its traits come from the server, its preview is drawn there
                    await page.wait_for_function(
                        "() => document.getElementById('design-preview').naturalWidth === 256",
                        timeout=30000,
                    )
                    before = await page.get_attribute("#design-preview", "src")
                    await page.select_option("#trait-hair", "bob")
                    await page.wait_for_function(
                        f"() => document.getElementById('design-preview').src !== '{before}'"
                        " && document.getElementById('design-preview').naturalWidth === 256",
                        timeout=30000,
                    )
                    # an upload is saved, listed and picked
                    await page.set_input_files("#avatar-file", str(picture))
                    await page.wait_for_function(
                        "() => document.getElementById('avatar-status').textContent"
                        ".startsWith('saved')",
                        timeout=30000,
                    )
                    picked = await page.evaluate("() => window.unisonAvatars.selected")
                    cards = await page.locator("#avatar-list .avatar").count()
                    await page.click("#connect")
                    frame = await _first_face(page, 90)
                finally:
                    await ctx.close()
            stored = srv.state.avatars.store.list(API_KEY)
        return {"frame": frame, "picked": picked, "cards": cards, "stored": stored}

    r = asyncio.run(main())
    assert [a["id"] for a in r["stored"]] == [r["picked"]], r["stored"]
    assert r["cards"] == 2, "the world identity and the saved avatar"
    assert r["frame"].shape == expected.shape
    score = ssim_outside_mouth(r["frame"], expected)
    print(json.dumps({"chromium_ssim_upload": round(score, 3)}))
    assert score >= SSIM_BAR, f"the page shows the upload at SSIM {score:.3f}"
