"""Stems for clients, end to end: a session opened with ``stems`` sends its speech and effects
as two more audio tracks, and the SDK receives them beside the mix (``audio_frames(stem=…)``,
``record(…, stems=True)``); a session without the option is the single mixed track it always
was. The server is real and in-process, over the fake engine, whose mix has both stems: a
440 Hz tone where the plan has words, a 2 kHz click at each ``<tag>``
(``engine/tone_replica.py``).
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from unison_sdk import AudioFrame, ConnectionFailed, UnisonError, connect
from unison_sdk.devices import stem_paths
from unison_sdk.media import Subscription
from unison_sdk.protocol import AUDIO_TRACKS

from tests.server_support import API_KEY, running_server
from tests.server_support import connect as raw_connect
from unison_stream.server.media import ClockAudioTrack, StemAudioTrack

TEXT = "Hello <clap> nice to see you <bell>"
RATE = 48_000
FRAME = 960  # samples of one 20 ms frame


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


async def _collect(sub: Subscription[AudioFrame], into: dict[int, np.ndarray]) -> None:
    async for f in sub:
        into[f.pts] = f.samples


def _aligned(got: dict[str, dict[int, np.ndarray]]) -> dict[str, np.ndarray]:
    """The frames every track delivered (same pts), each track's in pts order."""
    common = sorted(set.intersection(*(set(g) for g in got.values())))
    assert len(common) > 50, f"only {len(common)} frames in common"
    return {k: np.concatenate([g[p] for p in common]) for k, g in got.items()}


def _server_audio_tracks(srv: Any) -> list[Any]:
    (session,) = srv.state.manager.sessions.values()
    pc = session.transport.pc
    return [s.track for s in pc.getSenders() if s.track is not None and s.track.kind == "audio"]


def test_a_session_with_stems_sends_speech_and_effects_that_sum_to_the_mix() -> None:
    async def main() -> None:
        async with (
            running_server() as srv,
            connect(srv.base, api_key=API_KEY, stems=True) as avatar,
        ):
            assert avatar.stems
            tracks = _server_audio_tracks(srv)  # the mix, then its speech and its effects
            assert [t.id for t in tracks] == list(AUDIO_TRACKS)
            assert [type(t) for t in tracks] == [ClockAudioTrack, StemAudioTrack, StemAudioTrack]
            assert [t.source for t in tracks] == ["mix", "speech", "sfx"]
            got: dict[str, dict[int, np.ndarray]] = {t: {} for t in AUDIO_TRACKS}
            subs = {t: avatar.audio_frames(stem=t) for t in AUDIO_TRACKS}
            tasks = [asyncio.ensure_future(_collect(subs[t], got[t])) for t in AUDIO_TRACKS]
            utt = await avatar.say(TEXT)
            await asyncio.wait_for(utt, 30)
            await asyncio.sleep(0.3)  # the last frames through the jitter buffers
            for s in subs.values():
                s.close()
            await asyncio.gather(*tasks)
            a = _aligned(got)
            mix, speech, sfx = a["mix"], a["speech"], a["sfx"]
            err = speech + sfx - mix
            assert _rms(err) < 1e-3, f"speech + sfx − mix: RMS {_rms(err):.2e}"
            assert _rms(mix) > 0.05, "the utterance is in the mix"
            print(f"speech + sfx - mix over {len(mix)} samples: RMS {_rms(err):.2e}")
            # each stem holds its own part: the tone in the speech, the clicks in the effects
            hz = np.fft.rfftfreq(len(mix), 1 / RATE)
            tone = np.argmin(np.abs(hz - 440))
            spec = {k: np.abs(np.fft.rfft(v))[tone] for k, v in a.items()}
            assert spec["speech"] > 100 * spec["sfx"], "the tone leaked into the effects"
            loud = np.flatnonzero(np.abs(sfx) > 0.1)
            assert loud.size > 0, "no click in the effects stem"
            clicks = np.split(loud, np.flatnonzero(np.diff(loud) > RATE // 10) + 1)
            assert len(clicks) == 2, f"{len(clicks)} clicks for <clap> and <bell>"

    asyncio.run(main())


def test_a_session_without_stems_has_one_audio_track_and_refuses_a_stem() -> None:
    async def main() -> None:
        async with running_server() as srv, connect(srv.base, api_key=API_KEY) as avatar:
            assert not avatar.stems
            (track,) = _server_audio_tracks(srv)  # one mixed track, as always
            assert type(track) is ClockAudioTrack and track.source == "mix"
            assert track.id not in AUDIO_TRACKS  # aiortc's own id, as before
            offered = [t for t in avatar._rx.pc.getTransceivers() if t.kind == "audio"]
            assert len(offered) == 1
            with pytest.raises(UnisonError, match=r"without stems: connect\(\.\.\., stems=True\)"):
                avatar.audio_frames(stem="speech")
            with pytest.raises(UnisonError, match="without stems"):
                avatar.record("never.mp4", stems=True)
            mix = avatar.audio_frames()
            got: dict[int, np.ndarray] = {}
            task = asyncio.ensure_future(_collect(mix, got))
            await asyncio.wait_for(await avatar.say("Hello there"), 30)
            mix.close()
            await task
            pcm = np.concatenate([got[p] for p in sorted(got)])
            assert _rms(pcm) > 0.05, "the mix carries the speech"

    asyncio.run(main())


def test_record_with_stems_writes_the_mix_and_both_stems_lined_up(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"

    async def main() -> None:
        async with (
            running_server() as srv,
            connect(srv.base, api_key=API_KEY, stems=True) as avatar,
        ):
            await asyncio.wait_for(avatar.video_frames().__anext__(), 10)
            async with avatar.record(out, stems=True):
                await asyncio.wait_for(await avatar.say(TEXT), 30)

    asyncio.run(main())
    assert out.stat().st_size > 0
    wavs = []
    for p in stem_paths(out):
        with wave.open(str(p)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
            wavs.append(np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768.0)
    n = min(len(w) for w in wavs)
    assert n > RATE, f"{n} samples"
    assert max(len(w) for w in wavs) - n <= 4 * FRAME  # the last frames may differ
    mix, speech, sfx = (w[:n] for w in wavs)
    assert _rms(speech + sfx - mix) < 1e-3
    assert _rms(sfx) > 1e-3 and _rms(speech) > 0.05


def test_stems_are_a_private_boolean_option() -> None:
    async def main() -> None:
        async with running_server() as srv:
            with pytest.raises(ConnectionFailed, match="private sessions") as info:
                await connect(srv.base, api_key=API_KEY, stems=True, mode="broadcast", channel="c")
            assert info.value.status == 400
            async with aiohttp.ClientSession() as http:
                r = await http.post(
                    f"{srv.base}/v1/sessions",
                    json={"stems": "yes"},
                    headers={"Authorization": f"Bearer {API_KEY}"},
                )
                assert r.status == 400
                assert "'stems' must be a boolean" in (await r.json())["error"]["message"]

    asyncio.run(main())


def test_an_offer_with_one_audio_line_gets_the_mix_alone() -> None:
    """A browser page offers one audio line: a stems session answers it with the mix only."""

    async def main() -> None:
        async with running_server() as srv:
            client = await raw_connect(srv.base, {"stems": True})
            try:
                assert client.pc is not None
                (track,) = _server_audio_tracks(srv)
                assert track.id == "mix"
                for _ in range(200):
                    if len(client.audio) >= 10:
                        break
                    await asyncio.sleep(0.02)
                assert len(client.audio) >= 10, "the mix flows"
            finally:
                await client.close()

    asyncio.run(main())
