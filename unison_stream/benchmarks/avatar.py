"""``unison-stream bench avatar``: from an uploaded picture to the first frame of a session
on it, through the SDK against a served server (docs/avatars.md, "Figures").

Each trial uploads a picture (a drawn face, small and off-centre on a larger canvas, as
JPEG: the server finds, frames, normalises and encodes it), then opens a session on the new
id and waits for the first video frame of the model (the server's flat grey placeholder
skipped). The baseline, in the same server and the same trial, is a session on a world
identity. Figures (ms, p50 and max over trials): ``upload_ms`` (``create_avatar``),
``session_first_frame_ms`` (``connect(avatar=id)`` → that frame), ``upload_to_first_frame_ms``
(the two), ``identity_first_frame_ms`` (the baseline) and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from typing import Any

import numpy as np
from PIL import Image
from unison_sdk import connect, create_avatar, delete_avatar

from unison_stream.avatars import from_design
from unison_stream.benchmarks.harness import KEY, p50_max, print_figures, served, wait_healthy

__all__ = ["register"]

PLACEHOLDER_STD = 2.0  # the server's grey frame before the first decoded one is flat
FRAME_TIMEOUT_S = 120.0


def picture(trial: int) -> bytes:
    """A drawn face off the palettes (a new one each trial, so no cache helps), off-centre."""
    face = from_design({"skin": "#6ab04c", "hair": "bob", "seed": trial}).picture
    big = Image.fromarray(face).resize((176, 176), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (260, 300), tuple(int(v) for v in face[0, 0]))
    canvas.paste(big, (60, 70))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


async def first_frame_ms(base: str, **who: Any) -> float:
    """ms from ``connect`` to the first frame of the model in a session on ``who``."""
    t0 = time.perf_counter()
    async with connect(base, api_key=KEY, **who) as avatar:
        frames = avatar.video_frames()
        async for f in frames:
            if float(np.asarray(f.image).std()) > PLACEHOLDER_STD:
                break
        frames.close()
        return (time.perf_counter() - t0) * 1000.0


async def trials(base: str, n: int) -> dict[str, Any]:
    upload, session, total, identity = [], [], [], []
    for k in range(n):
        data = picture(k)
        t0 = time.perf_counter()
        info = await create_avatar(base, data, api_key=KEY)
        up = (time.perf_counter() - t0) * 1000.0
        first = await asyncio.wait_for(first_frame_ms(base, avatar=info.id), FRAME_TIMEOUT_S)
        base_ms = await asyncio.wait_for(first_frame_ms(base, identity=k), FRAME_TIMEOUT_S)
        await delete_avatar(base, info, api_key=KEY)
        upload.append(up)
        session.append(first)
        total.append(up + first)
        identity.append(base_ms)
    ratio = [t / i for t, i in zip(total, identity, strict=True)]
    return {
        "trials": n,
        "upload_ms": p50_max(upload),
        "session_first_frame_ms": p50_max(session),
        "upload_to_first_frame_ms": p50_max(total),
        "identity_first_frame_ms": p50_max(identity),
        "upload_to_first_frame_vs_identity": p50_max(ratio),
    }


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-avatars-") as store:
        overrides = [f"server.avatar_dir={store}", *args.overrides]
        with served(args.engine, overrides) as (_, base):

            async def main() -> dict[str, Any]:
                await wait_healthy(base, timeout_s=180)
                return await trials(base, args.trials)

            res = {"engine": args.engine, **asyncio.run(main())}
    print_figures(res, args.json)
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.benchmarks.cli`` for ``bench avatar``."""
    p = sub.add_parser("avatar", help="upload → the first frame of a session on it (ms)")
    p.add_argument("--engine", choices=("real", "fake"), default="real")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", help="key=value passed to serve")
    p.set_defaults(func=run)
