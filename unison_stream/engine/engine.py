"""The streaming engine: one worker per model replica, many sessions (``docs/engine.md``).

The worker loops over the open sessions. Each round it asks every session that has room in its
output queue (``max_ahead`` chunks: backpressure) for its next job — its identity sink, the next
chunk of the current utterance, or an idle/listening chunk, so the stream never stops — groups
the jobs that can share a forward (same kind, same forcing lead, same clean-audio pattern,
equally full cache windows) and sends each group to the replica
(:mod:`~unison_stream.engine.replica`: by default a child process whose main thread runs the
model), which runs it as one batched ``CausalGenerator.step`` through
:class:`~unison_stream.engine.batching.StackedCache` and decodes each session's rows with its
own streaming decoders; the worker mixes and hands the chunks back. A failing group is logged,
counted in each session's stats, its utterances end with a ``failed`` event and the sessions
restart from their identity sink: the stream goes on (a replica process that dies is restarted
and every session re-sinks).

Planning (espeak-ng timings, MiniLM embeddings) runs on a one-thread planner pool, never in the
caller's thread (``say`` only validates) and never in the worker's critical path.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from unison_stream.avatars import DEFAULT_CAPTION, Avatar, from_identity
from unison_stream.codecs import AudioEncoder, silence_latent
from unison_stream.config import UnisonConfig
from unison_stream.engine.audio import BandEnergySpeechEncoder, resample
from unison_stream.engine.batching import cat_conditioning, window_fill
from unison_stream.engine.encoders import trained_speech_encoder
from unison_stream.engine.planner import (
    LEAD_POLICIES,
    Planner,
    Segments,
    TimingProvider,
    transcript,
)
from unison_stream.engine.reference import References
from unison_stream.engine.replica import Replica, ReplicaError, StepRequest, make_replica
from unison_stream.engine.session import EngineSession
from unison_stream.engine.speech_frontend import SpeechFrontEnd
from unison_stream.engine.stream import Stream, with_identity
from unison_stream.engine.types import EngineClosedError, EngineFullError
from unison_stream.engine.utterance import Job, Planned
from unison_stream.model.conditioning import Conditioning, TimedTrack
from unison_stream.model.dit import UnisonDiT, patchify
from unison_stream.model.generator import ChunkCancelled, PlanSlice
from unison_stream.model.text import TextEncoder

__all__ = ["Engine", "EngineSession"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0  # how long ``close`` waits for the worker's step in flight
LISTENING_CAPTION = "{caption}, listening attentively"


class Engine:
    """One model replica, its worker thread and sessions (``docs/engine.md``)."""

    def __init__(
        self,
        cfg: UnisonConfig,
        *,
        checkpoint: Path | None = None,
        max_sessions: int = 4,
        max_ahead: int = 2,
        batch_sessions: bool = True,
        lead_policy: str = "none",
        timing: TimingProvider | None = None,
        model: UnisonDiT | None = None,
        replica: Replica | None = None,
    ) -> None:
        if lead_policy not in LEAD_POLICIES:
            raise ValueError(f"lead_policy must be one of {LEAD_POLICIES}, not {lead_policy!r}")
        if cfg.runtime.threads > 0:
            torch.set_num_threads(cfg.runtime.threads)
        # the model's replica, or one given (``ToneReplica``: a test pattern, no model)
        self.replica = replica if replica is not None else make_replica(cfg, checkpoint, model)
        self.cfg = self.replica.cfg  # the checkpoint's config
        self.device, self.dtype = self.replica.device, self.replica.dtype
        self.max_sessions, self.max_ahead = max_sessions, max_ahead
        self.batch_sessions, self.lead_policy = batch_sessions, lead_policy
        self.planner = Planner(timing=timing)
        self.speech_encoder: AudioEncoder | None = trained_speech_encoder(self.cfg)
        # the identity chunk's audio: the latent of silence, as in training (zeros without codec)
        self.silence = torch.zeros(self.cfg.latent.audio_channels)
        if self.speech_encoder is not None:
            self.silence = silence_latent(self.speech_encoder, self.cfg)
        self.fallback_encoder = BandEnergySpeechEncoder(self.cfg)  # until codecs are trained
        # speech → the timed track the audio-driven mode is conditioned on (as text mode's)
        self.frontend = SpeechFrontEnd.load()
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)
        self._encoder_lock = threading.Lock()
        self.references = References(self.cfg, self._encoder_lock)  # pictures → sink latents
        self._streams: dict[str, Stream] = {}  # by session id
        self._closing: list[str] = []  # released sessions whose replica rows are to be freed
        self._step_id = 0
        self._inflight: tuple[int, list[tuple[Stream, Job]]] | None = None
        self._cancelled_steps = 0
        self._restarts = 0  # replica process restarts seen by the worker
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="unison-planner")
        # the transcript's embedding, made while the planner times the words (both release
        # the GIL: libespeak-ng and torch), so planning costs the longer of the two, not both
        self._embed_pool = ThreadPoolExecutor(1, thread_name_prefix="unison-embed")
        self._group_ms: list[float] = []  # wall ms of every batched step + decode (bench)
        self._batched_steps = 0  # steps that served more than one session
        self._closed = False
        self._dead = False  # the worker died (a bug): no session can be served
        self._worker = threading.Thread(target=self._run, name="unison-engine-worker", daemon=True)
        self._worker.start()
        # start espeak-ng and MiniLM now (seconds of imports that hold the GIL in stretches)
        self._warm = self._pool.submit(self._plan, self.planner.validate("warm up"), None)
        log.info(
            "engine up: %s on %s/%s (%s replica), %.2f s chunks, %d sessions max, lead policy %s",
            self.cfg.preset,
            self.device,
            self.dtype,
            self.cfg.runtime.replica,
            self.cfg.chunk_seconds(),
            max_sessions,
            lead_policy,
        )

    # ---- public API ---------------------------------------------------------------------
    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the planner and text encoder are loaded (a server waits here before it
        serves: their loading holds the GIL in stretches of ~0.2 s, which would stall every
        stream's media on the event loop)."""
        self._warm.result(timeout)

    @property
    def sessions(self) -> int:
        with self._lock:
            return len(self._streams)

    def open_session(
        self,
        *,
        avatar: Avatar | None = None,
        identity: int = 0,
        caption: str = "",
        seed: int = 0,
        reference_frame: np.ndarray | None = None,
        reference: np.ndarray | None = None,
        hold: bool = False,
    ) -> EngineSession:
        """A new stream with its own identity sink; EngineFullError when every slot is taken.

        The person is an :class:`~unison_stream.avatars.Avatar` (``docs/avatars.md``): its
        picture becomes the sink (encoded by the trained video codec), its caption and seed the
        session's unless ``caption`` is given. Without one: ``reference_frame`` ``(H, W, 3)``
        uint8 is a bare picture (with ``caption`` and ``seed``), else the synthetic world's
        portrait of identity ``identity`` (``from_identity``). ``reference``: the latent a store
        cached for the picture (:meth:`encode_reference`), which skips the codec pass. Where no
        trained codec fits, the sink is a seeded latent (``reference.py``). ``hold``: make
        nothing past the sink until the first utterance can be made or a state is set, so an
        offline caller (eval, render) gets the same chunks on every run.
        """
        if avatar is None:
            m = self.cfg.media
            if reference_frame is not None:
                self.references.check(reference_frame)  # validate before taking a slot
                avatar = Avatar(reference_frame, caption or DEFAULT_CAPTION, seed, "upload")
            else:
                avatar = replace(from_identity(identity, width=m.width, height=m.height), seed=seed)
        ref, picture = self.references.sink(avatar, cached=reference)
        with self._lock:
            if self._closed or self._dead:
                raise EngineClosedError("engine is closed" if self._closed else "worker died")
            if len(self._streams) >= self.max_sessions:
                raise EngineFullError(f"all {self.max_sessions} sessions of this replica in use")
        caption = caption or avatar.caption
        idle, listening = self._pool.submit(
            self._encode, [caption, LISTENING_CAPTION.format(caption=caption)]
        ).result()
        identity_tokens = patchify(ref, self.cfg.latent.patch)[:, 0]  # (1, P, C·p²)
        number = avatar.provenance.get("identity")
        stream = Stream(
            self.cfg,
            idle=with_identity(idle, identity_tokens),
            listening=with_identity(listening, identity_tokens),
            ref=ref,
            silence=self.silence,
            lead_policy=self.lead_policy,
            max_ahead=self.max_ahead,
            identity=number if isinstance(number, int) else -1,  # -1: not a world identity
            caption=caption,
            seed=avatar.seed,
            hold=hold,
        )
        s = EngineSession(self, stream, avatar=avatar)
        with self._lock:
            if len(self._streams) >= self.max_sessions:
                raise EngineFullError(f"all {self.max_sessions} sessions of this replica in use")
        self.replica.open(s.session_id, avatar.seed, picture)  # its cache row and decoders
        with self._lock:
            if self._dead:
                raise EngineClosedError("worker died")
            self._streams[s.session_id] = stream
            self._work.notify_all()
        s.log.info("opened: %s avatar %s, caption %r", avatar.source, avatar.provenance, caption)
        return s

    def encode_reference(self, picture: np.ndarray) -> np.ndarray | None:
        """The sink latent of ``picture`` as float32 numpy ``(1, 1, C, h, w)``, for a store to
        keep and hand back as ``open_session(reference=…)``; None without a trained codec."""
        return self.references.encode_numpy(picture)

    @property
    def reference_key(self) -> str:
        """Names the codec and media size a cached reference was made with ("" without)."""
        return self.references.fingerprint()

    def stats(self) -> dict[str, float]:
        """Replica-wide figures: sessions, steps (batched, cancelled) and the wall time of each
        batched step + decode."""
        with self._lock:
            ms = sorted(self._group_ms[-1000:])
        return {
            "sessions": float(self.sessions),
            "steps": float(len(self._group_ms)),
            "batched_steps": float(self._batched_steps),
            "cancelled_steps": float(self._cancelled_steps),
            "step_ms_p50": ms[len(ms) // 2] if ms else 0.0,
        }

    def close(self) -> None:
        """Close every session, stop and join the worker; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams = list(self._streams.values())
            self._work.notify_all()
        for st in streams:
            if st.close():
                self._release_id(st.session_id)
        self._worker.join(timeout=CLOSE_TIMEOUT_S)
        if self._worker.is_alive():  # a step that never returns: do not hang the caller too
            log.error("engine worker still busy after %g s; closing without it", CLOSE_TIMEOUT_S)
        self._pool.shutdown(wait=not self._worker.is_alive(), cancel_futures=True)
        self._embed_pool.shutdown(wait=not self._worker.is_alive(), cancel_futures=True)
        self.replica.shutdown()
        log.info("engine closed")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- session services (the Scheduler protocol of ``session.py``) -----------------------
    def wake(self) -> None:
        """A stream changed (room in its queue, a new utterance): the worker looks again."""
        with self._lock:
            self._work.notify_all()

    def cancel_stale(self) -> None:
        """Abandon the chunk being made when every job in it has gone stale (an interrupt, or
        a planned ``say`` replacing an idle chunk): the next chunk starts now, not after it."""
        with self._lock:
            if self._inflight is None:
                return
            step_id, jobs = self._inflight
            if all(st.stale(job, cancel=True) for st, job in jobs):
                self._inflight = None
                self.replica.cancel(step_id)

    def release(self, session_id: str) -> None:
        """A closed session: its replica row is freed by the worker, between steps."""
        self._release_id(session_id)

    def _release_id(self, session_id: str) -> None:
        with self._lock:
            if self._streams.pop(session_id, None) is not None:
                self._closing.append(session_id)  # freed by the worker, between steps
            self._work.notify_all()

    def plan(self, segments: Segments, caption: str | None = None) -> Future[Planned]:
        """Plan a ``say``'s text, parsed once by ``Planner.validate``, on the planner thread."""
        with self._lock:
            if self._closed:
                raise EngineClosedError("engine is closed")
            return self._pool.submit(self._plan, segments, caption)

    def _plan(self, segments: Segments, caption: str | None) -> Planned:
        """Time the text and embed its transcript (and caption): runs on the planner thread."""
        words = transcript(segments)
        emb = self._embed_pool.submit(TextEncoder.shared().encode, [words, caption or ""])
        plan = self.planner.plan_segments(segments)
        cap = self._encode([caption])[0] if caption else None
        return Planned(plan, emb.result().pooled[:1], cap)

    def _encode(self, texts: list[str]) -> list[Conditioning]:
        """Batch-1 conditionings (no identity, empty track) for each caption in ``texts``."""
        emb = TextEncoder.shared().encode([*texts, ""])
        return [
            Conditioning(
                caption_tokens=emb.tokens[i : i + 1],
                caption_mask=emb.mask[i : i + 1],
                caption_pooled=emb.pooled[i : i + 1],
                transcript_pooled=emb.pooled[-1:],
                track_ids=torch.zeros(1, 1, dtype=torch.long),
                track_start=torch.zeros(1, 1),
                track_end=torch.zeros(1, 1),
                track_mask=torch.zeros(1, 1, dtype=torch.bool),
                identity=torch.zeros(1, 1, 1),
            )
            for i in range(len(texts))
        ]

    def encode_speech(
        self, pcm: np.ndarray, sample_rate: int
    ) -> tuple[np.ndarray, np.ndarray, TimedTrack]:
        """Caller's waveform → (speech at the media rate padded to whole chunks, latents, the
        speech's timed track read by the front end; empty without its weights)."""
        track = self.frontend.track(pcm, sample_rate) if self.frontend else TimedTrack()
        x = resample(pcm, sample_rate, self.cfg.media.sample_rate)
        if x.size == 0:
            raise ValueError("say_audio: empty waveform")
        per_chunk = round(self.cfg.chunk_seconds() * self.cfg.media.sample_rate)
        n = math.ceil(x.size / per_chunk) * per_chunk
        x = np.pad(np.clip(x, -1.0, 1.0), (0, n - x.size))
        return x, self._speech_latents(x), track

    def encode_speech_chunk(self, pcm: np.ndarray, k: int) -> np.ndarray:
        """Streamed audio input: (nc, Ca) latents of chunk ``k`` of ``pcm`` (media rate, whole
        chunks so far), encoded with the chunk before it as left context."""
        n = round(self.cfg.chunk_seconds() * self.cfg.media.sample_rate)
        nc = self.cfg.audio_frames_per_chunk()
        return self._speech_latents(pcm[max(0, k - 1) * n : (k + 1) * n])[-nc:]

    def _speech_latents(self, x: np.ndarray) -> np.ndarray:
        """(S,) speech at the media rate → (N, Ca) latents: the trained encoder, else the
        fallback."""
        if self.speech_encoder is None:
            return self.fallback_encoder.encode(x)
        with self._encoder_lock:  # the trained encoder carries state: one utterance at a time
            self.speech_encoder.reset()
            lat = self.speech_encoder.encode(x[None])[0]  # (N, Ca)
        return lat.float().cpu().numpy()

    # ---- the worker ---------------------------------------------------------------------
    def _run(self) -> None:
        """The worker's loop; should it die of a bug, every session is closed (a consumer in
        ``next_chunk`` gets None at once, ``say`` raises) instead of waiting for chunks that
        will never come."""
        try:
            self._serve()
        except BaseException:
            log.exception("engine worker died: closing every session")
            with self._lock:
                self._dead = True
                streams = list(self._streams.values())
            for st in streams:
                if st.close():
                    self._release_id(st.session_id)

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(
                    lambda: (
                        self._closed
                        or bool(self._closing)
                        or any(st.wants_chunk() for st in self._streams.values())
                    ),
                    timeout=min(
                        [0.5, *(w for st in self._streams.values() if (w := st.input_wait()))]
                    ),
                )
                closing, self._closing = self._closing, []
                closed = self._closed
                if not closed:
                    jobs = [
                        (st, st.next_job()) for st in self._streams.values() if st.wants_chunk()
                    ]
            for sid in closing:
                try:
                    self.replica.close_session(sid)
                except Exception:
                    log.exception("freeing session %s in the replica failed", sid)
            if closed:
                return
            for group in self._groups(jobs):
                self._run_group(group)

    def _groups(self, jobs: list[tuple[Stream, Job]]) -> list[list[tuple[Stream, Job, PlanSlice]]]:
        """Jobs that may share one forward, with their batch-1 plan slices."""
        groups: dict[tuple[object, ...], list[tuple[Stream, Job, PlanSlice]]] = {}
        for n, (st, job) in enumerate(jobs):
            plan = st.plan_slice(job)
            fill = window_fill(st.index, self.cfg.stream.window_chunks)
            key: tuple[object, ...] = (
                job.kind,
                plan.lead or "none",
                plan.lead_steps or 0,
                plan.clean_audio_mask if plan.clean_audio is not None else None,
                fill,
            )
            if not self.batch_sessions or job.kind == "sink":
                key = (*key, n)
            groups.setdefault(key, []).append((st, job, plan))
        return list(groups.values())

    def _run_group(self, group: list[tuple[Stream, Job, PlanSlice]]) -> None:
        t0 = time.perf_counter()
        p0 = group[0][2]
        plan = PlanSlice(
            cat_conditioning([p.cond for *_, p in group], [job.track for _, job, _ in group]),
            clean_video=_cat([p.clean_video for *_, p in group]),
            clean_audio=_cat([p.clean_audio for *_, p in group]),
            clean_audio_mask=p0.clean_audio_mask,
            lead=p0.lead,
            lead_steps=p0.lead_steps,
        )
        with self._lock:
            self._step_id += 1
            req = StepRequest(
                [st.session_id for st, *_ in group],
                plan,
                [job.kind != "sink" for _, job, _ in group],
                self._step_id,
            )
            self._inflight = (self._step_id, [(st, job) for st, job, _ in group])
        try:
            decoded = self.replica.step(req)  # the replica resets the group's rows on failure
            chunks = [
                None if d is None else st.media(job, d)
                for (st, job, _), d in zip(group, decoded, strict=True)
            ]
        except ChunkCancelled:  # nothing was committed; every job of it is stale
            with self._lock:
                self._cancelled_steps += 1
            return
        except Exception as e:  # a model, decoder or mixer failure must not stop the stream
            if not isinstance(e, ReplicaError):  # failed here, after the replica advanced
                for sid in req.sessions:
                    with contextlib.suppress(Exception):
                        self.replica.reset(sid)
            with self._lock:
                for st, job, _ in group:
                    st.fail(job, e)
                self._resink_after_restart()
            log.error("group of %d failed: %s", len(group), e)
            return
        finally:
            with self._lock:
                self._inflight = None
        dt = time.perf_counter() - t0
        with self._lock:
            self._group_ms.append(dt * 1000)
            self._batched_steps += len(group) > 1
        for (st, job, _), chunk in zip(group, chunks, strict=True):
            if chunk is None:
                st.sunk()
            else:
                st.push(job, chunk, dt / len(group))

    def _resink_after_restart(self) -> None:
        """After the replica process was restarted every row is empty: all sessions re-sink
        (under the lock)."""
        if self.replica.restarts == self._restarts:
            return
        self._restarts = self.replica.restarts
        for st in self._streams.values():
            st.resink()


def _cat(xs: list[torch.Tensor | None]) -> torch.Tensor | None:
    if xs[0] is None:
        return None
    return torch.cat([x for x in xs if x is not None])
