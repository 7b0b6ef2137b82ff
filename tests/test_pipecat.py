"""The Pipecat video service (docs/pipecat.md) in a real Pipecat pipeline, against the real server
in-process (fake engine, WebRTC on loopback): the TTS's frames become the avatar's synced
video and audio, bot speaking frames follow the avatar's events, interruptions (five in a row
too) cut the avatar and the pipeline goes on."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

pytest.importorskip("pipecat", reason="pipecat-ai not installed (pip install pipecat-ai)")

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.tests.utils import SleepFrame, run_test
from unison_sdk.pipecat import UnisonVideoService

from tests.server_support import API_KEY, running_server

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TTS_RATE = 24000
FRAME = TTS_RATE // 50  # 20 ms


def _reply(seconds: float, *, realtime: bool = True) -> list[Frame]:
    """A TTS reply as Pipecat carries it: started, 20 ms audio frames, stopped."""
    t = np.arange(round(seconds * TTS_RATE)) / TTS_RATE
    pcm = (0.3 * np.sin(2 * np.pi * 200 * t) * 32767).astype("<i2")
    frames: list[Frame] = [TTSStartedFrame()]
    for i in range(0, pcm.size, FRAME):
        frames.append(TTSAudioRawFrame(pcm[i : i + FRAME].tobytes(), TTS_RATE, 1))
        if realtime:
            frames.append(SleepFrame(0.02))
    return [*frames, TTSStoppedFrame()]


def _run(frames: list[Frame]) -> tuple[list[Frame], list[Frame], UnisonVideoService]:
    async def main() -> tuple[list[Frame], list[Frame], UnisonVideoService]:
        async with running_server() as srv:
            svc = UnisonVideoService(srv.base, api_key=API_KEY)
            down, up = await run_test(svc, frames_to_send=frames, start_timeout=20.0)
            return list(down), list(up), svc

    return asyncio.run(main())


def test_a_reply_becomes_synced_avatar_video_and_audio_with_speaking_frames() -> None:
    down, up, svc = _run([*_reply(1.0), SleepFrame(2.0)])
    assert svc.utterances == 1
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert audio and all(f.sample_rate == 48000 for f in audio), "the avatar's audio, not the TTS's"
    heard = sum(len(f.audio) // 2 for f in audio) / 48000
    assert 0.8 <= heard <= 1.5, heard  # the reply (1 s, padded to whole chunks) and no idle
    video = [f for f in down if isinstance(f, OutputImageRawFrame)]
    assert len(video) >= 25 * 2.5, "25 fps video the whole time (idle included)"
    kinds = [
        type(f) for f in down if isinstance(f, BotStartedSpeakingFrame | BotStoppedSpeakingFrame)
    ]
    assert kinds == [BotStartedSpeakingFrame, BotStoppedSpeakingFrame]
    first_audio = next(i for i, f in enumerate(down) if isinstance(f, TTSAudioRawFrame))
    started = next(i for i, f in enumerate(down) if isinstance(f, BotStartedSpeakingFrame))
    stopped = next(i for i, f in enumerate(down) if isinstance(f, BotStoppedSpeakingFrame))
    last_audio = max(i for i, f in enumerate(down) if isinstance(f, TTSAudioRawFrame))
    assert (
        abs(first_audio - started) < 40 and last_audio < stopped + 40
    )  # same moment ± a few frames
    assert [type(f) for f in up if isinstance(f, BotStartedSpeakingFrame | BotStoppedSpeakingFrame)]


def test_interruptions_cut_the_avatar_five_in_a_row_and_the_next_reply_plays() -> None:
    frames: list[Frame] = []
    for _ in range(5):  # the user barges in 0.4 s into each reply
        reply = _reply(2.0)
        frames += [*reply[: 1 + 2 * 20], InterruptionFrame(), SleepFrame(0.3)]
    frames += [*_reply(0.6), SleepFrame(2.0)]
    down, _, svc = _run(frames)
    assert svc.utterances == 6
    started = sum(isinstance(f, BotStartedSpeakingFrame) for f in down)
    stopped = sum(isinstance(f, BotStoppedSpeakingFrame) for f in down)
    assert started == stopped >= 1, (started, stopped)
    heard = sum(len(f.audio) // 2 for f in down if isinstance(f, TTSAudioRawFrame)) / 48000
    # each cut reply plays at most its 0.4 s and the chunk in flight; the last one whole
    assert heard <= 5 * (0.4 + 0.5) + 1.2, heard
    tail = down[max(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame)) :]
    assert any(isinstance(f, TTSAudioRawFrame) for f in tail), "the reply after them played"


@pytest.mark.parametrize("text", [False, True], ids=["streamed_tts", "text_mode"])
def test_the_example_bot_runs_its_script_with_a_local_tts(tmp_path: Path, text: bool) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (Debian package espeak-ng)")
    spec = importlib.util.spec_from_file_location("pipecat_bot", EXAMPLES / "pipecat_bot.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "bot.mp4"

    async def main() -> dict[str, object]:
        async with running_server() as srv:
            args = argparse.Namespace(
                url=srv.base, api_key=API_KEY, out=str(out), measure=False, text=text
            )
            return await example.bot(args)

    r = asyncio.run(main())
    video_frames = r["video_frames"]
    # streamed TTS opens one stream per reply; text mode says them (no stream)
    assert r["replies"] == (0 if text else 4)
    assert isinstance(video_frames, int) and video_frames > 25 * 8
    speaking = r["speaking_frames"]
    assert isinstance(speaking, list)
    # a pair per reply that was heard: the cut one too unless the cut beat its first chunk
    assert speaking.count("BotStartedSpeakingFrame") == speaking.count("BotStoppedSpeakingFrame")
    assert speaking.count("BotStartedSpeakingFrame") >= 3
    cut = r["interrupt_to_silence_ms"]
    assert isinstance(cut, list) and len(cut) == 1 and 0 <= cut[0] < 1000, cut
    with av.open(str(out)) as f:
        assert {s.type for s in f.streams} == {"video", "audio"}


@dataclass
class _DropFrame(SystemFrame):
    """Test-only: cut the service's websocket under it (a network drop, no close frame)."""


class _DroppingService(UnisonVideoService):
    resumes = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, EndFrame) and self.avatar is not None:
            self.resumes = self.avatar.resumes
        if isinstance(frame, _DropFrame) and self.avatar is not None:
            ws = self.avatar._ws
            assert ws is not None
            ws.transport.abort()
            return
        await super().process_frame(frame, direction)


def test_a_dropped_connection_mid_reply_resumes_and_the_conversation_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import unison_sdk.client as sdk_client

    monkeypatch.setattr(sdk_client, "BACKOFF_S", (0.2, 0.2))
    first = _reply(1.5)
    frames = [
        *first[:30],
        _DropFrame(),
        *first[30:],
        SleepFrame(1.5),
        *_reply(0.8),
        SleepFrame(2.0),
    ]

    async def main() -> tuple[list[Frame], UnisonVideoService]:
        async with running_server() as srv:
            svc = _DroppingService(srv.base, api_key=API_KEY)
            down, _ = await run_test(svc, frames_to_send=frames, start_timeout=20.0)
            assert svc.avatar is None  # closed at the EndFrame
            return list(down), svc

    down, svc = asyncio.run(main())
    assert svc.utterances == 2 and isinstance(svc, _DroppingService) and svc.resumes == 1
    assert sum(isinstance(f, BotStartedSpeakingFrame) for f in down) == 2
    assert sum(isinstance(f, BotStoppedSpeakingFrame) for f in down) == 2
    heard = sum(len(f.audio) // 2 for f in down if isinstance(f, TTSAudioRawFrame)) / 48000
    assert heard >= 1.5 + 0.8 - 0.3, heard  # both replies, the dropped one included
