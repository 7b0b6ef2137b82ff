"""Upload → session → the face on screen, with the real engine and the bundled ``tiny`` model
(the fake engine's test pattern would not show a picture): the SDK uploads a picture the
world never drew, opens a session on its id, and the first frame the model makes (after the
server's grey placeholder) shows the normalised upload — SSIM ≥ 0.8 outside the mouth, which
speaks. The engine takes the store's cached encoded reference as it is (docs/avatars.md)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from unison_sdk import VideoFrame, connect, create_avatar, delete_avatar, list_avatars

from tests.server_support import API_KEY, running_server
from unison_stream.avatars import from_design, from_upload
from unison_stream.codecs import CodecUnavailableError, load_encoders
from unison_stream.codecs.metrics import ssim
from unison_stream.config import load_config
from unison_stream.engine import Engine
from unison_stream.server.session import MediaSpec

CFG = load_config("tiny")
try:
    load_encoders(CFG)
    HAVE_CODEC = True
except CodecUnavailableError:  # pragma: no cover - the trained codec weights are bundled
    HAVE_CODEC = False
pytestmark = pytest.mark.skipif(not HAVE_CODEC, reason="no trained video codec weights")

SSIM_BAR = 0.8
# the mouth and chin, as fractions of the frame (the framing puts the face's centre at
# (0.5, 0.42) and the mouth 0.16–0.225 of the height below the eyes)
MOUTH_ROWS, MOUTH_COLS = (0.45, 0.75), (0.28, 0.72)
PLACEHOLDER_STD = 2.0  # the server's grey frame before the first decoded one is flat


def upload_bytes() -> bytes:
    """A green-skinned face with pink hair, small and off-centre on a larger canvas, as JPEG:
    the server must find it, frame it and normalise it."""
    face = from_design({"skin": "#6ab04c", "hair": "bob", "hair_color": "pink", "seed": 3})
    big = Image.fromarray(face.picture).resize((176, 176), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (260, 300), tuple(int(v) for v in face.picture[0, 0]))
    canvas.paste(big, (60, 70))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def ssim_outside_mouth(frame: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of two (H, W, 3) uint8 frames with the mouth box taken from ``reference``."""
    h, w = reference.shape[:2]
    shown = frame.copy()
    r0, r1 = (round(f * h) for f in MOUTH_ROWS)
    c0, c1 = (round(f * w) for f in MOUTH_COLS)
    shown[r0:r1, c0:c1] = reference[r0:r1, c0:c1]
    a, b = (torch.from_numpy(x).float()[None] / 255 for x in (shown, reference))
    return float(ssim(a, b)[0])


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine(CFG, max_sessions=1)
    eng.wait_ready()
    yield eng
    eng.close()


def test_the_store_hands_the_engine_its_cached_reference(engine: Engine) -> None:
    avatar = from_upload(upload_bytes())
    cached = engine.encode_reference(avatar.picture)
    assert cached is not None and cached.dtype == np.float32
    ref, picture = engine.references.sink(avatar, cached=cached)
    torch.testing.assert_close(ref, engine.references.encode(avatar.picture))
    assert picture is avatar.picture
    assert engine.reference_key.startswith("128x128:") and len(engine.reference_key) > 9


def test_upload_then_session_shows_the_picture_through_the_sdk(
    engine: Engine, tmp_path: Path
) -> None:
    m = CFG.media
    media = MediaSpec(fps=m.fps, width=m.width, height=m.height, sample_rate=m.sample_rate)
    expected = from_upload(upload_bytes()).picture  # what the server normalises it to

    async def first_face(frames: object) -> VideoFrame:
        async for f in frames:  # type: ignore[attr-defined]
            if float(f.image.std()) > PLACEHOLDER_STD:
                return f
        raise AssertionError("the video ended before a frame of the model")

    async def main() -> tuple[float, float]:
        async with running_server(engine, media, avatar_dir=str(tmp_path)) as srv:
            info = await create_avatar(srv.base, upload_bytes(), api_key=API_KEY, caption="me")
            assert info.source == "upload" and (info.width, info.height) == (128, 128)
            stored = srv.state.avatars.store.get(API_KEY, info.id)
            assert np.array_equal(stored.avatar.picture, expected)
            assert stored.reference is not None, "the encoded reference is cached at upload"
            assert [a.id for a in await list_avatars(srv.base, api_key=API_KEY)] == [info.id]
            async with connect(srv.base, api_key=API_KEY, avatar=info) as avatar:
                frames = avatar.video_frames()
                shown = await asyncio.wait_for(first_face(frames), 60)
                frames.close()
            # a world identity is another face: the measure tells them apart
            async with connect(srv.base, api_key=API_KEY, identity=5) as other:
                frames = other.video_frames()
                stranger = await asyncio.wait_for(first_face(frames), 60)
                frames.close()
            await delete_avatar(srv.base, info, api_key=API_KEY)
            assert await list_avatars(srv.base, api_key=API_KEY) == []
        return (
            ssim_outside_mouth(shown.image, expected),
            ssim_outside_mouth(stranger.image, expected),
        )

    mine, theirs = asyncio.run(main())
    print(json.dumps({"ssim_upload": round(mine, 3), "ssim_other_identity": round(theirs, 3)}))
    assert mine >= SSIM_BAR, f"the first frame shows the upload at SSIM {mine:.3f}"
    assert theirs < mine - 0.1, f"another person scores {theirs:.3f} against {mine:.3f}"
