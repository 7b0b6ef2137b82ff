"""The SDK against the server running the real causal engine (tiny test config, random
weights): the same say → queued / started / finished contract, frames of the model's size."""

from __future__ import annotations

import asyncio

import numpy as np
from unison_sdk import connect

from tests.helpers import small_config
from tests.server_support import API_KEY, running_server
from unison_stream.engine import Engine
from unison_stream.server.session import MediaSpec


def test_sdk_says_through_the_real_engine() -> None:
    cfg = small_config()
    m = cfg.media
    media = MediaSpec(fps=m.fps, width=m.width, height=m.height, sample_rate=m.sample_rate)

    async def main() -> None:
        with Engine(cfg, max_sessions=1) as engine:
            async with (
                running_server(engine, media) as srv,
                connect(srv.base, api_key=API_KEY) as avatar,
            ):
                frames = avatar.video_frames()
                first = await asyncio.wait_for(frames.__anext__(), 20)
                utt = await avatar.say("Hi there")
                await asyncio.wait_for(utt, 30)
                frames.close()
        assert [e.event for e in utt.events] == ["queued", "started", "finished"]
        assert first.image.shape == (m.height, m.width, 3) and first.image.dtype == np.uint8

    asyncio.run(main())
