#!/usr/bin/env python3
"""A Pipecat bot whose replies the avatar speaks: text → a local TTS → UnisonVideoService.

No network and no LLM: each line of the script is a reply; a stand-in TTS (espeak-ng, run
locally) streams it as 20 ms audio frames at real time, the way a streaming cloud TTS would;
``UnisonVideoService`` streams them to the server and pushes the avatar's synced video and
audio downstream, where this example records them to an mp4 (``--out``) and prints a JSON
summary: frames, audio seconds, bot speaking frames, and with ``--measure`` the lip-sync
offset and correlation of the recording (``unison_stream.eval.lipsync``, needs the server
package). ``!interrupt`` in the script barges in 1 s into the next reply. ``--text`` has the
avatar speak the same script from text (``say``) through the same pipeline, the text-mode
reference for the lip-sync figures.

    unison-stream serve &                     # prints the API key
    python examples/pipecat_bot.py --api-key KEY --out bot.mp4 --measure
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import time
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner
from unison_sdk.pipecat import UnisonVideoService

SCRIPT = [
    "Hello! I am the avatar of a Pipecat bot.",
    "Every word you hear was streamed to me while the speech was still being made.",
    "!interrupt",
    "This reply is cut short by the user, who has something to say.",
    "Thanks for listening, goodbye!",
]


def espeak(text: str) -> tuple[np.ndarray, int]:
    """``text`` spoken by espeak-ng: (S,) int16 mono and its rate."""
    wav = subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


class Recorder(FrameProcessor):
    """The pipeline's end: what an output transport would play, written to an mp4."""

    def __init__(self, out: Path | None) -> None:
        super().__init__()
        self.video: list[np.ndarray] = []
        self.audio: list[tuple[float, np.ndarray]] = []  # (media s, 48 kHz int16) while speaking
        self.audio_wall: list[float] = []  # when each audio frame reached the end (monotonic)
        self.speaking: list[str] = []
        self.out = out

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            w, h = frame.size
            self.video.append(np.frombuffer(frame.image, np.uint8).reshape(h, w, 3))
        elif isinstance(frame, TTSAudioRawFrame):
            self.audio.append((frame.metadata["unison_time_s"], np.frombuffer(frame.audio, "<i2")))
            self.audio_wall.append(time.monotonic())
        elif isinstance(frame, BotStartedSpeakingFrame | BotStoppedSpeakingFrame):
            self.speaking.append(type(frame).__name__)
        await self.push_frame(frame, direction)

    def track(self) -> np.ndarray:
        """The avatar's audio on the video's timeline (silence where it did not speak)."""
        pcm = np.zeros(round(len(self.video) / 25 * 48000), np.int16)
        for t, a in self.audio:
            start = min(round(t * 48000), pcm.size)
            end = min(start + a.size, pcm.size)
            pcm[start:end] = a[: end - start]
        return pcm

    def write(self) -> None:
        if self.out is None or not self.video:
            return
        with av.open(str(self.out), "w") as f:
            vs = f.add_stream("libx264", rate=25)
            vs.height, vs.width = self.video[0].shape[:2]
            vs.pix_fmt = "yuv420p"
            aus = f.add_stream("aac", rate=48000)
            for img in self.video:
                f.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            f.mux(vs.encode(None))
            pcm = self.track()
            for i in range(0, pcm.size - 1024, 1024):
                af = av.AudioFrame.from_ndarray(
                    pcm[None, i : i + 1024], format="s16", layout="mono"
                )
                af.sample_rate, af.pts, af.time_base = 48000, i, Fraction(1, 48000)
                f.mux(aus.encode(af))
            f.mux(aus.encode(None))


async def bot(args: argparse.Namespace) -> dict[str, object]:
    svc = UnisonVideoService(args.url, api_key=args.api_key)
    rec = Recorder(Path(args.out) if args.out else None)
    worker = PipelineWorker(Pipeline([svc, rec]), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _on_started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    cuts: list[tuple[float, float]] = []  # (interrupt queued, the next reply queued)

    async def speak() -> None:
        await asyncio.wait_for(started.wait(), 30)
        barge = False
        for line in SCRIPT:
            if line == "!interrupt":
                barge = True
                continue
            if cuts and cuts[-1][1] == float("inf"):
                cuts[-1] = (cuts[-1][0], time.monotonic())
            if args.text:  # the avatar's own voice, same pipeline: the text-mode reference
                assert svc.avatar is not None
                utt = await svc.avatar.say(line)
                if barge:
                    await asyncio.sleep(1.0)
                    cuts.append((time.monotonic(), float("inf")))
                    await worker.queue_frame(InterruptionFrame())
                await utt
                barge = False
                await asyncio.sleep(1.0)
                continue
            pcm, rate = espeak(line)
            frame = rate // 50
            await worker.queue_frame(TTSStartedFrame())
            for n, i in enumerate(range(0, pcm.size, frame)):  # a streaming TTS: real time
                if barge and n == 50:  # the user barges in 1 s into the reply
                    cuts.append((time.monotonic(), float("inf")))
                    await worker.queue_frame(InterruptionFrame())
                    break
                await worker.queue_frame(TTSAudioRawFrame(pcm[i : i + frame].tobytes(), rate, 1))
                await asyncio.sleep(0.02)
            await worker.queue_frame(TTSStoppedFrame())
            barge = False
            await asyncio.sleep(1.0)  # the avatar plays the reply out, then a pause
        await asyncio.sleep(1.5)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner()
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), speak())
    rec.write()
    out: dict[str, object] = {
        "video_frames": len(rec.video),
        "audio_s": sum(a.size for _, a in rec.audio) / 48000,
        "speaking_frames": rec.speaking,
        "replies": svc.utterances,
        "mp4": args.out,
        # interrupt → the last audio frame of the cut reply reached the pipeline's end
        "interrupt_to_silence_ms": [
            round(1000 * (max([t for t in rec.audio_wall if a <= t < b], default=a) - a), 1)
            for a, b in cuts
        ],
    }
    if args.measure:
        from unison_stream.engine.audio import resample
        from unison_stream.eval.features import load_features, mouth_open
        from unison_stream.eval.lipsync import lip_sync

        speech = resample(rec.track().astype(np.float32) / 32768.0, 48000, 16000)
        frames = np.stack(rec.video)
        ls = lip_sync(frames, speech, 16000, 25.0)  # eval's mouth-colour detector
        out.update(lipsync_offset_ms=ls.offset_ms, lipsync_corr=ls.corr)
        features = load_features()
        if features is not None:  # the learned mouth-opening head: reads through VP8 and blur
            head = lip_sync(frames, speech, 16000, 25.0, mouth=mouth_open(features[0], frames))
            out.update(lipsync_head_offset_ms=head.offset_ms, lipsync_head_corr=head.corr)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--api-key", required=True)
    p.add_argument("--out", default=None, help="write what the bot output to this mp4")
    p.add_argument("--measure", action="store_true", help="lip-sync of the recording")
    p.add_argument("--text", action="store_true", help="speak the script from text instead")
    args = p.parse_args()
    print(json.dumps(asyncio.run(bot(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
