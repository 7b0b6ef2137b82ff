"""``unison-stream bench stream``: the streaming engine end to end, as figures and ratios.

Figures (one JSON object), all measured through the public engine API in one process:

- ``rtf``: media seconds per wall second, one session speaking back to back for ``--seconds``
  of media, consumer draining as fast as chunks come (the engine's own pace);
  ``chunk_ms_p50`` / ``chunk_ms_p95``: worker wall time per chunk (step + decode + mix);
- ``first_media_ms``: ``say`` → the utterance's first decoded chunk (video + audio) in hand,
  on a streaming session whose consumer plays in real time (median of ``--trials``);
  ``open_first_media_ms``: ``open_session`` → first chunk;
- ``interrupt_ms``: ``interrupt`` → first chunk after it in hand (median), and
  ``interrupt_leak_chunks``: chunks of the interrupted utterance delivered after it (0 = the
  interrupt takes effect at the next chunk boundary);
- ``peak_rss_mb``, ``rss_growth_pct``: resident memory of this process plus the replica's
  child process (``runtime.replica: process``) at the end vs after the first 10 % of the run
  (meaningful with ``--seconds 600``); peak = the sum of both processes' high-water marks;
- ``recompute_rtf`` / ``speedup_vs_recompute``: the same chunk without a cache (every solver
  step re-runs sink + W chunks + the current one) plus the same decode, same process;
- ``batched_sessions_throughput_gain``: media seconds per wall second of 2 sessions batched
  into one forward vs the same 2 sessions stepped one after the other (``batch_sessions=False``);
- ``student_vs_teacher_chunk_ratio``: mean worker ms per chunk of the configured sampler ÷ the
  same with the 4-step guided teacher's sampler (:data:`TEACHER_SAMPLER`), same text, same
  process (the weights do not change the cost, the schedule does); ``…_generate_ratio``: the
  same for the generation alone (the replica's step without the decode), with
  ``[teacher_]chunk_ms_mean`` / ``generate_ms_mean`` / ``decode_ms_mean`` beside; both
  engines run side by side and are measured in alternating rounds (noise falls on both);
- ``speech_input_latency_ms_p50`` / ``_max``: streamed audio input (``say_audio_stream``),
  24 kHz speech written in 20 ms frames at real time: for each chunk, the moment its last
  sample (and one more) was written → the chunk decoded, median and max over the utterance;
  ``…_chunks``: the same in chunk lengths (the bar: ≤ 1); ``speech_input_bit_exact``: the
  speech of the delivered chunks equals the whole input resampled;
  ``speech_input_listening_chunks``: listening chunks put in for late input (0 expected);
- the host (``runtime.host_info``: CPU model, ISA in use, threads).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from unison_stream.codecs import load_decoders
from unison_stream.config import UnisonConfig, load_config
from unison_stream.engine.audio import Mixer, resample
from unison_stream.engine.engine import Engine
from unison_stream.engine.session import EngineSession
from unison_stream.model.checkpoint import default_model
from unison_stream.model.conditioning import TimedTrack
from unison_stream.runtime import host_info, resolve_dtype

__all__ = ["bench_stream", "register"]

# the sampler of the 4-step teacher (the bundled default before the few-step student)
TEACHER_SAMPLER: dict[str, Any] = {"steps": 4, "event_guidance": 3.0, "event_guidance_video": 2.0}

TEXT = "The little robot painted the garden near the station <clap> and then it said hello <wave>"


def _status_mb(pids: list[str], field: str) -> float:
    """Sum of ``field`` (``VmRSS``, ``VmHWM``) in /proc/<pid>/status, in MiB."""
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) / 1024
    return total


def _pids(eng: Engine) -> list[str]:
    """This process and the replica's child, if any."""
    child = eng.replica.pid
    return ["self"] + ([str(child)] if child is not None else [])


def _drain(s: EngineSession, media_s: float, bar: tqdm | None = None) -> float:
    """Consume ``media_s`` of media as fast as it comes, keeping the session speaking."""
    cs = s.stream.chunk_s
    t0, got, n = time.perf_counter(), 0.0, 0
    while got < media_s - 1e-9:
        if s.stats()["buffer_ms"] == 0 and not s.stream.has_pending():
            s.say(TEXT, utterance_id=f"b{n}")
            n += 1
        c = s.next_chunk(timeout=60)
        assert c is not None, "stream stalled"
        got += cs
        if bar is not None:
            bar.update(1)
    return got / (time.perf_counter() - t0)


def _paced(s: EngineSession, seconds: float) -> None:
    """Play ``seconds`` of media in real time (the engine runs ahead up to max_ahead)."""
    t0, got = time.perf_counter(), 0.0
    while got < seconds:
        if s.next_chunk(timeout=60) is not None:
            got += s.stream.chunk_s
        lag = t0 + got - s.stream.chunk_s - time.perf_counter()  # hold one chunk of buffer
        if lag > 0:
            time.sleep(lag)


def _first_media(s: EngineSession, trials: int) -> list[float]:
    out = []
    s.interrupt()  # nothing left of earlier utterances: measure from an idle stream
    for i in range(trials):
        _paced(s, 1.0)
        t0 = time.perf_counter()
        s.say("Hello there, nice to see you.", utterance_id=f"fm{i}")
        while True:
            c = s.next_chunk(timeout=60)
            if c is not None and c.utterance_id == f"fm{i}":
                out.append((time.perf_counter() - t0) * 1000)
                break
        s.interrupt()
    return out


def _interrupt(s: EngineSession, trials: int) -> tuple[list[float], int]:
    out, leaked = [], 0
    for i in range(trials):
        uid = f"int{i}"
        s.say(TEXT, utterance_id=uid)
        while (c := s.next_chunk(timeout=60)) is None or c.utterance_id != uid:
            pass
        _paced(s, 0.64)
        t0 = time.perf_counter()
        s.interrupt()
        c = s.next_chunk(timeout=60)
        out.append((time.perf_counter() - t0) * 1000)
        leaked += int(c is not None and c.utterance_id == uid)
        for _ in range(3):
            c = s.next_chunk(timeout=60)
            leaked += int(c is not None and c.utterance_id == uid)
    return out, leaked


def _speech_input(s: EngineSession, seconds: float, rate: int = 24000) -> dict[str, Any]:
    """The ``speech_input_*`` figures (module docstring)."""
    cs = s.stream.chunk_s
    t = np.arange(round(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 170 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )
    s.interrupt()  # from an idle stream
    _paced(s, 0.5)
    w = s.say_audio_stream(rate, utterance_id="streamed")
    arrived: dict[int, float] = {}

    def tts() -> None:  # a streaming TTS at real time, 20 ms frames
        frame, t0 = rate // 50, time.monotonic()
        for i in range(0, pcm.size, frame):
            w.write(pcm[i : i + frame])
            now = time.monotonic()
            for k in range(len(arrived), w.chunks_ready()):
                arrived[k] = now
            time.sleep(max(0.0, t0 + (i + frame) / rate - time.monotonic()))
        w.end()
        for k in range(len(arrived), w.chunks_ready()):
            arrived[k] = time.monotonic()

    writer = threading.Thread(target=tts, name="bench-tts", daemon=True)
    writer.start()
    chunks, listening, k = [], 0, 0
    while True:
        c = s.next_chunk(timeout=60)
        assert c is not None, "the stream stalled"
        if c.utterance_id == "streamed":
            chunks.append((k, c))
            k += 1
        elif chunks:
            listening += int(c.state == "listening")
        if any(e.event == "finished" and e.utterance_id == "streamed" for e in s.poll_events()):
            break
    writer.join()
    lat = [1000 * (c.times["decoded"] - arrived[k]) for k, c in chunks]
    speech = np.concatenate([c.speech for _, c in chunks if c.speech is not None])
    want = resample(pcm, rate, s._engine.cfg.media.sample_rate)
    return {
        "speech_input_latency_ms_p50": statistics.median(lat),
        "speech_input_latency_ms_max": max(lat),
        "speech_input_latency_chunks_max": max(lat) / (1000 * cs),
        "speech_input_bit_exact": bool(np.array_equal(speech[: want.size], want)),
        "speech_input_listening_chunks": listening,
    }


def _recompute_chunk_ms(eng: Engine, decode_ms: float, repeats: int) -> float:
    """One chunk without a cache: every step re-runs sink + W history chunks + the chunk (the
    same model and dtype as the engine's replica, run here on the main thread)."""
    cfg = eng.cfg
    dev = torch.device(eng.device)
    m = default_model(cfg).to(device=dev, dtype=resolve_dtype(cfg.runtime, dev)).eval()
    w, fc, nc = (
        cfg.stream.window_chunks,
        cfg.stream.chunk_latent_frames,
        cfg.audio_frames_per_chunk(),
    )
    k = w + 2
    hv = torch.randn(1, k * fc, cfg.tokens_per_frame(), cfg.latent.video_token_dim(), device=dev)
    ha = torch.randn(1, cfg.audio_streams(), k * nc, cfg.latent.audio_channels, device=dev)
    tv = torch.zeros(1, k * fc, device=dev)
    ta = torch.zeros(1, cfg.audio_streams(), k * nc, device=dev)
    tv[:, -fc:], ta[:, :, -nc:] = 0.5, 0.5
    stream = next(iter(eng._streams.values()))
    cond = stream.idle.with_tracks([TimedTrack()]).to(dev)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(cfg.sampler.steps):
                m(hv, ha, tv, ta, cond)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times) + decode_ms


def bench_stream(cfg: UnisonConfig, *, seconds: float = 20.0, trials: int = 5) -> dict[str, Any]:
    """Measure the figures of the module docstring."""
    out: dict[str, Any] = {"preset": cfg.preset, "seconds": seconds, **host_info()}
    cs = cfg.chunk_seconds()
    with Engine(cfg, max_sessions=2, max_ahead=2) as eng:
        out.update(device=eng.device, dtype=eng.dtype.replace("torch.", ""))
        t0 = time.perf_counter()
        s = eng.open_session(identity=1, caption="a woman in a green jumper")
        assert s.next_chunk(timeout=120) is not None
        out["open_first_media_ms"] = (time.perf_counter() - t0) * 1000
        _drain(s, 2.0)  # warm-up: planner, text encoder, allocator
        bar = tqdm(
            total=math.ceil(seconds / cs), desc="bench stream", unit="chunk", file=sys.stderr
        )
        warm = max(cs, 0.1 * seconds)
        _drain(s, warm, bar)
        rss0 = _status_mb(_pids(eng), "VmRSS")
        steps0 = len(eng._group_ms)
        rest = seconds - warm
        out["rtf"] = _drain(s, rest, bar) if rest > 0 else 0.0
        bar.close()
        ms = sorted(eng._group_ms[steps0:])
        out["chunk_ms_p50"] = ms[len(ms) // 2]
        out["chunk_ms_p95"] = ms[min(len(ms) - 1, math.ceil(0.95 * len(ms)) - 1)]
        out["rss_growth_pct"] = 100 * (_status_mb(_pids(eng), "VmRSS") - rss0) / rss0
        fm = _first_media(s, trials)
        out["first_media_ms"] = statistics.median(fm)
        out["first_media_ms_max"] = max(fm)
        it, leaked = _interrupt(s, trials)
        out["interrupt_ms"] = statistics.median(it)
        out["interrupt_ms_max"] = max(it)
        out["interrupt_leak_chunks"] = leaked
        out.update(_speech_input(s, min(seconds / 2, 8.0)))
        out["chunk_seconds"] = cs
        # decode share: a chunk's decode + mix, on decoders like the replica's (main thread)
        video, speech, sfx = load_decoders(cfg, 1)
        video.set_reference(np.zeros((cfg.media.height, cfg.media.width, 3), np.uint8))
        mixer = Mixer()
        lat = torch.randn(
            1,
            cfg.stream.chunk_latent_frames,
            cfg.latent.video_channels,
            *cfg.latent.latent_hw(cfg.media),
        )
        alat = torch.randn(1, cfg.audio_frames_per_chunk(), cfg.latent.audio_channels)
        t0 = time.perf_counter()
        for _ in range(10):
            video.decode(lat)
            mixer.mix(speech.decode(alat)[0], sfx.decode(alat)[0])
        out["decode_ms"] = (time.perf_counter() - t0) * 100
        rec = _recompute_chunk_ms(eng, out["decode_ms"], 3)
        out["recompute_rtf"] = cs * 1000 / rec
        out["speedup_vs_recompute"] = out["rtf"] / out["recompute_rtf"]
        s.close()
        out["peak_rss_mb"] = _status_mb(_pids(eng), "VmHWM")
    out["batched_sessions_throughput_gain"] = _batched_gain(cfg, min(seconds / 2, 8.0))
    media = min(seconds / 2, 8.0)
    teacher = replace(cfg, sampler=replace(cfg.sampler, **TEACHER_SAMPLER))
    own, ref = _mean_chunk_ms([cfg, teacher], media)
    for name, (chunk, gen, dec) in (("", own), ("teacher_", ref)):
        out[f"{name}chunk_ms_mean"] = chunk
        out[f"{name}generate_ms_mean"] = gen
        out[f"{name}decode_ms_mean"] = dec
    out["student_vs_teacher_chunk_ratio"] = own[0] / ref[0]
    out["student_vs_teacher_generate_ratio"] = own[1] / ref[1]
    return out


def _mean_chunk_ms(
    cfgs: list[UnisonConfig], media_s: float, rounds: int = 4
) -> list[tuple[float, float, float]]:
    """Per config, mean ms per chunk of one session speaking :data:`TEXT`: the worker's whole
    chunk (step, decode, mix, transfer), and within the replica the generation and the decode.
    The configs' engines run side by side and are drained in turn, ``rounds`` times
    ``media_s / rounds`` each, so a noisy stretch of the host falls on every config alike; an
    engine waits with a full queue (computing nothing) while another is drained."""
    engines = [Engine(c, max_sessions=1, max_ahead=2) for c in cfgs]
    try:
        sessions = []
        for eng in engines:
            s = eng.open_session(identity=1, caption="a woman in a green jumper")
            assert s.next_chunk(timeout=120) is not None
            _drain(s, 1.0)  # warm-up
            sessions.append(s)
        ms: list[list[float]] = [[] for _ in cfgs]
        parts: list[list[tuple[float, float]]] = [[] for _ in cfgs]
        for eng, s in zip(engines, sessions, strict=True):
            _settle(s, eng.max_ahead)
        for _ in range(rounds):
            for i, (eng, s) in enumerate(zip(engines, sessions, strict=True)):
                n0 = len(eng._group_ms)
                eng.replica.timings()
                _drain(s, media_s / rounds)
                _settle(s, eng.max_ahead)  # the chunks that refill it are this round's too
                ms[i] += eng._group_ms[n0:]
                parts[i] += eng.replica.timings()
        return [
            (
                statistics.fmean(m),
                statistics.fmean(g for g, _ in p),
                statistics.fmean(d for _, d in p),
            )
            for m, p in zip(ms, parts, strict=True)
        ]
    finally:
        for eng in engines:
            eng.close()


def _settle(s: EngineSession, ahead: int, limit_s: float = 10.0) -> None:
    """Wait until ``s`` has its queue full: its engine's worker then computes nothing."""
    end = time.monotonic() + limit_s
    while s.stats()["buffer_ms"] < ahead * s.stream.chunk_s * 1000 - 1 and time.monotonic() < end:
        time.sleep(0.02)


def _two_sessions_rtf(cfg: UnisonConfig, batch: bool, media_s: float) -> float:
    """Media seconds (both sessions) per wall second, consumers draining in lockstep."""
    with Engine(cfg, max_sessions=2, max_ahead=2, batch_sessions=batch) as eng:
        a, b = eng.open_session(identity=1), eng.open_session(identity=2)
        for s in (a, b):
            s.next_chunk(timeout=120)
        for _ in range(eng.cfg.stream.window_chunks + 3):  # fill both windows: batchable
            a.next_chunk(timeout=60)
            b.next_chunk(timeout=60)
        n = math.ceil(media_s / eng.cfg.chunk_seconds())
        t0 = time.perf_counter()
        for _ in range(n):
            a.next_chunk(timeout=60)
            b.next_chunk(timeout=60)
        return 2 * n * eng.cfg.chunk_seconds() / (time.perf_counter() - t0)


def _batched_gain(cfg: UnisonConfig, media_s: float) -> float:
    seq = _two_sessions_rtf(cfg, False, media_s)
    bat = _two_sessions_rtf(cfg, True, media_s)
    return bat / seq


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.preset, args.overrides)
    res = bench_stream(cfg, seconds=args.seconds, trials=args.trials)
    if args.json:
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
    else:
        for k, v in res.items():
            sys.stdout.write(f"{k:34s} {v:.3f}\n" if isinstance(v, float) else f"{k:34s} {v}\n")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("stream", help="streaming engine: rtf, latency, interrupt, memory")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seconds", type=float, default=20.0, help="media seconds to stream")
    p.add_argument("--trials", type=int, default=5, help="first-media and interrupt trials")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", default=[], help="config overrides")
    p.set_defaults(func=run)
