"""Screenshots of the demo page in every state a viewer sees, as a new user sees them.

Against a running server (``make demo`` or ``unison-stream serve``), headless Chromium opens
the page, presses Connect and takes the page idle, speaking (a sentence after ``say``),
listening (the box ticked after the reply) and back to idle; the shots are written side by
side, each labelled, the whole page above and the video with its overlay (fps, buffers,
A/V offset, the server's underruns) at full size below, to one PNG (the README's
``docs/page_states.png``)::

    unison-stream serve --checkpoint PATH &          # prints the API key
    python scripts/page_shots.py --key KEY --out docs/page_states.png

Needs Debian's ``chromium`` and Playwright (``make test`` installs both).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from unison_stream.benchmarks.browser import CHROMIUM, launch

SENTENCE = "Hello! I am your avatar, and this is how I look while I talk to you."
IDLE_S = 6.0  # the page idle this long after the first frame
SPEAKING_S = 1.6  # after say: past the reply's first frames, mid-sentence
LISTENING_S = 4.0  # after the box is ticked
LABEL_H = 28  # px of label above each shot


Shot = tuple[str, bytes, bytes]  # (label, the page's PNG, the video stage's PNG)


async def shots(base: str, key: str, width: int, height: int) -> list[Shot]:
    """The page idle, speaking, listening and idle again."""
    from playwright.async_api import async_playwright

    out: list[Shot] = []
    async with async_playwright() as pw:
        with tempfile.TemporaryDirectory() as profile:
            ctx = await launch(pw, profile)
            try:
                page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                await page.set_viewport_size({"width": width, "height": height})
                await page.goto(f"{base}/#key={key}")
                await page.click("#connect")
                await page.wait_for_function(
                    "() => (window.unison.stats.framesDecoded || 0) > 10", timeout=60000
                )

                async def shot(label: str) -> None:
                    stage = await page.locator("#stage").screenshot()
                    out.append((label, await page.screenshot(), stage))

                await asyncio.sleep(IDLE_S)
                await shot(f"idle ({IDLE_S:.0f} s after Connect)")
                await page.fill("#text", SENTENCE)
                await page.click("#say")
                await asyncio.sleep(SPEAKING_S)
                await shot(f"speaking ({SPEAKING_S} s after Say)")
                await page.wait_for_function(_REPLY_ENDED, timeout=30000)
                await page.check("#listening")
                await asyncio.sleep(LISTENING_S)
                await shot("listening (after the reply)")
                await page.uncheck("#listening")
                await asyncio.sleep(LISTENING_S)
                await shot("idle again")
            finally:
                await ctx.close()
    return out


# the reply's ``finished`` event reached the page (its message log, ``window.unison.messages``)
_REPLY_ENDED = "() => window.unison.messages.some(m => m.event === 'finished')"


def _image(png: bytes, scale: float) -> Image.Image:
    import io

    with Image.open(io.BytesIO(png)) as im:
        w, h = im.size
        return im.convert("RGB").resize((round(w * scale), round(h * scale)))


def side_by_side(parts: list[Shot], out: Path, scale: float) -> None:
    """The shots left to right, each under its label: the page at ``scale``, the video
    stage at full size below it; one PNG at ``out``."""
    pages = [_image(page, scale) for _, page, _ in parts]
    stages = [_image(stage, 1.0) for _, _, stage in parts]
    w = max(max(im.size[0] for im in pages), max(im.size[0] for im in stages))
    h_page, h_stage = max(im.size[1] for im in pages), max(im.size[1] for im in stages)
    sheet = Image.new("RGB", (w * len(parts), LABEL_H + h_page + h_stage), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, _, _) in enumerate(parts):
        sheet.paste(pages[i], (i * w, LABEL_H))
        sheet.paste(stages[i], (i * w, LABEL_H + h_page))
        draw.text((i * w + 8, 8), label, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", default="http://127.0.0.1:8080", help="the server's page URL")
    p.add_argument("--key", required=True, help="the server's API key (serve prints it)")
    p.add_argument("--out", type=Path, default=Path("docs/page_states.png"))
    p.add_argument("--width", type=int, default=900, help="browser viewport, px")
    p.add_argument("--height", type=int, default=1000, help="browser viewport, px")
    p.add_argument("--scale", type=float, default=0.5, help="each shot's scale in the sheet")
    args = p.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"page_shots needs {CHROMIUM} (Debian package chromium)")
    parts = asyncio.run(shots(args.base, args.key, args.width, args.height))
    side_by_side(parts, args.out, args.scale)
    print(f"wrote {args.out}: {', '.join(label for label, _, _ in parts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
