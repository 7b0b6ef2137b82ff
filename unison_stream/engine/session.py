"""A session's handle: the thread-safe API a server holds (``docs/engine.md``).

:class:`EngineSession` is thin: the stream's state lives in its
:class:`~unison_stream.engine.stream.Stream`; the handle adds what needs the engine — planning
a ``say`` on the planner thread, encoding caller speech, waking the worker and abandoning a
chunk that went stale. The engine is seen through the :class:`Scheduler` protocol — public,
typed methods only — so this file does not import ``engine.py`` (which imports it).
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import Future
from typing import Protocol

import numpy as np

from unison_stream.avatars import Avatar
from unison_stream.config import UnisonConfig
from unison_stream.engine.planner import Planner, Segments
from unison_stream.engine.speech_frontend import SpeechFrontEnd
from unison_stream.engine.stream import Stream
from unison_stream.engine.types import Held, MediaChunk, UtteranceEvent
from unison_stream.engine.utterance import Planned, SpeechInput, Utterance
from unison_stream.model.conditioning import TimedTrack

__all__ = ["EngineSession", "Scheduler", "SpeechWriter"]


class Scheduler(Protocol):
    """What a session handle needs of the engine that schedules its stream
    (:class:`~unison_stream.engine.Engine`)."""

    cfg: UnisonConfig
    planner: Planner
    frontend: SpeechFrontEnd | None  # speech → timed track (None: no weights)

    def plan(self, segments: Segments, caption: str | None = None) -> Future[Planned]:
        """Time and embed parsed text on the planner thread."""

    def encode_speech(
        self, pcm: np.ndarray, sample_rate: int
    ) -> tuple[np.ndarray, np.ndarray, TimedTrack]:
        """A waveform → (speech at the media rate in whole chunks, latents, its track)."""

    def encode_speech_chunk(self, pcm: np.ndarray, k: int) -> np.ndarray:
        """(nc, Ca) latents of chunk ``k`` of streamed speech at the media rate."""

    def wake(self) -> None:
        """A stream changed: the worker looks again."""

    def cancel_stale(self) -> None:
        """Abandon the chunk being made if every job in it went stale."""

    def release(self, session_id: str) -> None:
        """A closed session's replica row is to be freed."""


class SpeechWriter:
    """Writes a streamed audio-driven utterance (:meth:`EngineSession.say_audio_stream`):
    :meth:`write` PCM pieces as they come (a TTS's frames), then :meth:`end`. Thread-safe;
    writes after an interrupt dropped the utterance are ignored (:attr:`dropped`)."""

    def __init__(self, session: EngineSession, utt: Utterance) -> None:
        self._session, self._utt = session, utt

    @property
    def utterance_id(self) -> str:
        return self._utt.utterance_id

    @property
    def dropped(self) -> bool:
        """The utterance was interrupted (or the session closed): writes go nowhere."""
        return self._utt.dropped

    def chunks_ready(self) -> int:
        """Chunks whose speech has arrived whole (and can be made)."""
        inp = self._utt.speech_input
        assert inp is not None
        with self._session.stream.lock:
            return next(k for k in itertools.count() if not inp.makeable(k))

    def write(self, pcm: np.ndarray) -> None:
        """Append (S,) float speech in [-1, 1] at the stream's sample rate."""
        self._session._stream_audio(self._utt, pcm, end=False)

    def end(self) -> None:
        """No more speech: the utterance finishes with what was written (idempotent)."""
        self._session._stream_audio(self._utt, np.zeros(0, np.float32), end=True)


class EngineSession:
    """Thread-safe handle on one stream; every method is non-blocking but ``next_chunk``."""

    def __init__(self, engine: Scheduler, stream: Stream, *, avatar: Avatar | None = None) -> None:
        self._engine, self.stream = engine, stream
        self.avatar = avatar  # the person it shows (docs/avatars.md)
        self.session_id = stream.session_id
        self.identity, self.caption, self.seed = stream.identity, stream.caption, stream.seed
        self.log = stream.log

    # ---- utterances ---------------------------------------------------------------------
    def say(
        self, text: str, *, utterance_id: str, caption: str | None = None, interrupt: bool = False
    ) -> None:
        """Queue ``text`` (inline ``<tags>``); ValueError on an unknown tag or too long text."""
        segments = self._engine.planner.validate(text)  # ValueError in the caller's thread
        plan = self._engine.plan(segments, caption)
        self.stream.enqueue(
            Utterance(utterance_id, plan=plan, caption=caption), interrupt=interrupt
        )
        self._changed()
        # once planned it can be made (wake the worker), and an idle chunk still being made is
        # not worth waiting for
        plan.add_done_callback(lambda _: self._changed())

    def say_audio(self, pcm: np.ndarray, sample_rate: int, *, utterance_id: str) -> None:
        """Queue a speech waveform (audio-driven mode): held clean, returned as the speech stem."""
        queued_at = time.monotonic()
        speech, latents, track = self._engine.encode_speech(pcm, sample_rate)
        utt = Utterance(utterance_id, speech_latents=latents, speech_pcm=speech, track=track)
        utt.queued_at, utt.encoded_at = queued_at, time.monotonic()
        self.stream.enqueue(utt, interrupt=False)
        self._changed()

    def say_audio_stream(
        self, sample_rate: int, *, utterance_id: str, interrupt: bool = False
    ) -> SpeechWriter:
        """Start a streamed audio-driven utterance: speech arrives in pieces through the
        returned writer while the avatar already speaks it. Each chunk is made once its audio
        is here (its speech held clean, motion and effects generated around it); input later
        than its real-time pace by ``stream.input_grace_s`` gets a listening chunk instead."""
        if not 8000 <= sample_rate <= 48000:
            raise ValueError(f"sample_rate must be 8000–48000, not {sample_rate}")
        cfg = self._engine.cfg
        per_chunk = round(cfg.chunk_seconds() * cfg.media.sample_rate)
        fe = self._engine.frontend
        inp = SpeechInput(
            sample_rate, cfg.media.sample_rate, per_chunk, fe.stream(sample_rate) if fe else None
        )
        utt = Utterance(utterance_id, speech_input=inp)
        self.stream.enqueue(utt, interrupt=interrupt)
        self._changed()
        return SpeechWriter(self, utt)

    def interrupt(self) -> None:
        """Stop the current utterance at the next chunk boundary and drop the queued ones."""
        self.stream.interrupt()
        self._changed()  # the chunk being made belongs to what was dropped

    def set_state(self, state: str) -> None:
        """``"idle"`` or ``"listening"``: what the avatar does when nothing is said."""
        self.stream.set_state(state)

    # ---- output -------------------------------------------------------------------------
    def next_chunk(self, timeout: float | None = None) -> MediaChunk | None:
        """The next chunk, right after the previous one on the media timeline; None on timeout
        or once closed."""
        chunk = self.stream.wait_chunk(timeout)
        if chunk is not None:
            self._engine.wake()  # room in the queue: the worker may make the next chunk
        return chunk

    def next_media(self, start_s: float, *, over_idle: bool = False) -> MediaChunk | Held | None:
        """The chunk to play from media time ``start_s`` when one is ready, without waiting —
        the one verb of a media clock, asked at each chunk boundary (``over_idle``: while an
        idle chunk plays, only an utterance's chunk is handed out, to cut it short).
        :class:`Held`: the next utterance's first chunk is made and waits for the stream's
        buffer policy (its start must play through); None: nothing is made (an underrun)."""
        got, wake = self.stream.next_media(start_s, over_idle=over_idle)
        if wake:  # room in the queue: the worker may make the next chunk
            self._engine.wake()
        return got

    def set_buffer(self, *, ahead_s: float, max_prebuffer_s: float) -> None:
        """The consumer's buffer, once: ``ahead_s`` of media made ahead of it, and at most
        ``max_prebuffer_s`` of waiting before an utterance starts (to play through)."""
        self.stream.set_buffer(ahead_s=ahead_s, max_prebuffer_s=max_prebuffer_s)
        self._engine.wake()

    def queued(self) -> list[str | None]:
        """The utterance ids of the chunks made and not yet taken (None: idle), oldest first."""
        return self.stream.queued()

    def describe(self) -> str:
        """One line of the stream's state (queue, utterances, whether it wants a chunk), for
        an error that says why no chunk came."""
        return self.stream.describe()

    def poll_events(self) -> list[UtteranceEvent]:
        """Utterance events since the last call, in order."""
        return self.stream.poll_events()

    def stats(self) -> dict[str, float]:
        """rtf (media s per compute s), buffer_ms, chunks, generated, dropped, underflows…"""
        return self.stream.stats()

    def close(self) -> None:
        """Free the batch slot and the cache; idempotent."""
        if self.stream.close():
            self._engine.release(self.session_id)
            self.log.info("closed")

    @property
    def closed(self) -> bool:
        return self.stream.closed

    def _changed(self) -> None:
        """The stream's queue changed: wake the worker; abandon a chunk that went stale."""
        self._engine.wake()
        self._engine.cancel_stale()

    def _stream_audio(self, utt: Utterance, pcm: np.ndarray, *, end: bool) -> None:
        """A :class:`SpeechWriter` piece: resample, encode the chunks it completes, wake."""
        inp = utt.speech_input
        assert inp is not None
        with inp.lock:
            if inp.ended:
                if end:
                    return
                raise ValueError(f"utterance {utt.utterance_id}: write after end")
            if utt.dropped:
                return
            x = inp.resampler.end() if end else inp.resampler.push(pcm)
            reader = inp.frontend
            if reader is not None:  # the track, read off the caller's own samples
                if end:
                    reader.finish()
                else:
                    reader.push(pcm)
                track, known = reader.track(), reader.known_s
            speech = np.concatenate([inp.pcm, np.clip(x, -1.0, 1.0)])
            samples = speech.size
            if end:  # pad to whole chunks (at least one: an empty stream is one silent chunk)
                n = max(1, -(-samples // inp.per_chunk)) * inp.per_chunk
                speech = np.pad(speech, (0, n - samples))
            whole = speech.size // inp.per_chunk
            new = [self._engine.encode_speech_chunk(speech, k) for k in range(inp.encoded, whole)]
            with self.stream.lock:
                if new:
                    old = [] if inp.latents is None else [inp.latents]
                    inp.latents = np.concatenate([*old, *new])
                inp.pcm, inp.samples, inp.ended = speech, samples, end
                if reader is not None:
                    inp.track, inp.known_s = track, known
                utt.speech_pcm, utt.speech_latents = inp.pcm, inp.latents
                if inp.anchor is None and (inp.makeable(0) or end):
                    inp.anchor = time.monotonic()
        self._changed()
