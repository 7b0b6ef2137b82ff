"""A channel: one engine session, the media clock that reads it, and the release of its events.

A :class:`Channel` owns one engine session and the :class:`~.media.MediaClock` that reads it
and, for broadcast, the shared encoder. Its clock task advances the timeline in real time
(even with no viewer) and releases the engine's utterance events to its members when playout
reaches them (docs/protocol.md: ``started`` / ``finished`` match what the client hears), with,
per member whose tracks are its own, the audio pts of the event's sample. A private session's
channel has one member; broadcast sessions naming the same channel share one. Members are
anything with ``post`` and ``playout`` (:class:`Member`): sessions, the MQTT bridge's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Protocol, cast

from unison_sdk._tasks import TaskManager

from unison_stream.server import protocol as P
from unison_stream.server.broadcast import SharedEncoder
from unison_stream.server.config import ServerConfig
from unison_stream.server.engine_api import EngineSessionLike, EventLike
from unison_stream.server.errors import ServerError
from unison_stream.server.media import AUDIO_RATE, HOPS, KEEP_TRACES, MediaClock, Playout

__all__ = ["Channel", "MediaSpec", "Member"]

log = logging.getLogger(__name__)

TICK_S = 0.02  # channel clock tick: materialise due slots, release due events
ERROR_REPORT_S = 1.0  # at most one engine ``error`` message per channel per this period


def _play_state(state: str) -> P.PlayState:
    """The clock's state as the protocol names it (the clock plays only these)."""
    if state not in P.PLAY_STATES:
        raise ValueError(f"the media clock reports an unknown state {state!r}")
    return cast(P.PlayState, state)


class Member(Protocol):
    """What a channel needs of a member: a message sink and its own tracks' playout."""

    def post(self, msg: P.Sequenced) -> None: ...

    @property
    def playout(self) -> Playout | None: ...


class MediaSpec:
    """Output media format of the engine (from the model config)."""

    def __init__(self, *, fps: float, width: int, height: int, sample_rate: int) -> None:
        self.fps, self.width, self.height, self.sample_rate = fps, width, height, sample_rate


class Channel:
    """One engine session and its media clock; one member (private) or many (broadcast)."""

    def __init__(
        self,
        name: str,
        engine_session: EngineSessionLike,
        media: MediaSpec,
        cfg: ServerConfig,
        *,
        broadcast: bool,
    ) -> None:
        self.name, self.engine_session, self.cfg = name, engine_session, cfg
        self.broadcast = broadcast
        self.label = name
        self.clock = MediaClock(
            engine_session,
            fps=media.fps,
            width=media.width,
            height=media.height,
            sample_rate=media.sample_rate,
            buffer_s=cfg.buffer_s,
            max_prebuffer_s=cfg.max_prebuffer_s,
            label=name,
            on_error=self._on_engine_error,
        )
        self.tasks = TaskManager(f"channel:{name}")
        self.members: set[Member] = set()
        self.encoder = (
            SharedEncoder(
                self.clock,
                self.tasks,
                gop_s=cfg.broadcast_gop_s,
                bitrate=cfg.video_bitrate,
                label=name,
            )
            if broadcast
            else None
        )
        self._due: list[EventLike] = []  # started/finished events waiting for playout
        self._said: dict[str, float] = {}  # utterance id → time.monotonic() the say arrived
        self._cut_sample: int | None = None  # clock sample (48 kHz) of the last interrupt
        self._cut_unix_s = 0.0  # time.time() when that sample is due
        self._tick_t0 = 0.0  # loop time of the timeline's slot 0
        self._last_state = "idle"
        self._last_error_report = -1e9
        self.errors = 0
        self._closed = False

    def start(self) -> None:
        self.tasks.create(self._tick_loop(), name="clock")

    # ---- engine faults (the clock reports what reading the engine session raised) -----------
    def _on_engine_error(self, e: BaseException) -> None:
        self.errors += 1
        log.error("[%s] engine error mid-stream: %r; falling back to idle", self.label, e)
        try:
            self.engine_session.set_state("idle")
        except Exception as e2:  # the engine may be broken; idle slots keep the stream alive
            log.warning("[%s] set_state(idle) after error failed: %r", self.label, e2)
        now = time.monotonic()
        if now - self._last_error_report >= ERROR_REPORT_S:
            self._last_error_report = now
            err = ServerError(f"generation failed: {type(e).__name__}; streaming idle")
            self.publish(P.error_msg(err))
            self.publish(P.StateEvent("idle"))

    # ---- fan-out to members -----------------------------------------------------------------
    def publish(self, msg: P.Sequenced) -> None:
        for s in list(self.members):
            s.post(msg)

    def media_time(self) -> float:
        return self.clock.next_slot / self.clock.fps

    # ---- the clock task ---------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        """Advance the timeline in real time (even with no viewer) and release due events."""
        loop = asyncio.get_running_loop()
        t0 = self._tick_t0 = loop.time()
        next_stats = t0 + self.cfg.stats_interval_s
        while True:
            now = loop.time()
            due_slot = int((now - t0) * self.clock.fps)
            if due_slot >= self.clock.next_slot:
                self.clock.slot(due_slot)
            self._pump_events()
            if self.clock.state != self._last_state:
                self._last_state = self.clock.state
                self.publish(P.StateEvent(_play_state(self.clock.state)))
            if now >= next_stats:
                next_stats = now + self.cfg.stats_interval_s
                self.publish(P.StatsEvent(self.stats()))
            await asyncio.sleep(TICK_S)

    def _pump_events(self) -> None:
        try:
            events = self.engine_session.poll_events()
        except Exception as e:
            log.warning("[%s] poll_events failed: %r", self.label, e)
            events = []
        for ev in events:
            if ev.event == "queued":  # now, on the clock's timeline
                self.publish(P.UtteranceEvent(ev.utterance_id, "queued", self.media_time()))
            elif ev.event == "interrupted":
                self._publish_interrupted(ev.utterance_id)
            elif ev.event in ("started", "finished"):
                self._due.append(ev)
            elif ev.event == "failed":  # the engine's own fault report: chunk could not be made
                self.errors += 1
                log.error("[%s] engine failed utterance %s; idle", self.label, ev.utterance_id)
                msg = f"generation failed for utterance {ev.utterance_id}; streaming idle"
                self.publish(P.error_msg(ServerError(msg, ref=ev.utterance_id)))
            else:
                log.debug("[%s] ignoring engine event %r", self.label, ev.event)
        if not self._due:
            return
        played = self.clock.played_media_s
        keep: list[EventLike] = []
        for ev in self._due:
            # the clock placed the chunks, so an event's time is that of the sample it names on
            # the clock's timeline; released once the slot holding it has played: ``started``
            # at T with the slot that starts at T, ``finished`` at T (an end) with the slot
            # ending at T
            t = ev.media_time_s
            if (t < played - 1e-6) if ev.event == "started" else (t <= played + 1e-6):
                if ev.event == "started":
                    self._publish_started(ev.utterance_id, t, ev.effects)
                else:
                    self.publish(P.UtteranceEvent(ev.utterance_id, "finished", t))
            else:
                keep.append(ev)
        self._due = keep

    def _publish_started(
        self, uid: str, media_s: float, effects: tuple[tuple[str, float], ...]
    ) -> None:
        """``started`` with its hop trace and, per member, where its first sample is: the
        member's audio pts (private sessions) and the wall time its first slot was sent."""
        first = self.clock.first_slots.get(uid)  # (slot, time.time() it was sent)
        sent = None if first is None else first[1]
        msg = P.UtteranceEvent(
            uid, "started", media_s, trace_ms=self._trace(uid), sent_at_unix_s=sent, effects=effects
        )
        self._publish_at(msg, None if first is None else first[0] * self.clock.samples_per_slot)

    def _publish_interrupted(self, uid: str) -> None:
        """``interrupted`` with where the cut is: the first clock sample after the last
        interrupt (a 20 ms audio frame boundary, or the next slot's start)."""
        cut = self._cut_sample
        at = cut / AUDIO_RATE if cut is not None else self.media_time()
        msg = P.UtteranceEvent(uid, "interrupted", at, sent_at_unix_s=self._cut_unix_s)
        self._publish_at(msg, cut)

    def _publish_at(self, msg: P.UtteranceEvent, sample: int | None) -> None:
        """Publish ``msg`` with, per member whose tracks are its own, ``audio_pts``: the audio
        sample index of clock sample ``sample`` on that member's track."""
        for s in list(self.members):
            pts = s.playout.audio_pts(sample) if sample is not None and s.playout else None
            s.post(msg if pts is None else dataclasses.replace(msg, audio_pts=pts))

    def said(self, utterance_id: str) -> None:
        """Note when a say (or audio upload) arrived: the origin of its latency trace."""
        self._said[utterance_id] = time.monotonic()
        while len(self._said) > KEEP_TRACES:
            self._said.pop(next(iter(self._said)))

    def _trace(self, utterance_id: str) -> dict[str, float] | None:
        """ms from the say's arrival to each hop of the utterance's first chunk, or None."""
        hops = self.clock.traces.get(utterance_id)
        origin = self._said.pop(utterance_id, None)
        if hops is None or origin is None:
            return None
        return {h: round(1000 * (hops[h] - origin), 1) for h in HOPS if hops.get(h, 0.0) > 0}

    def interrupt(self) -> None:
        """Stop speech now: the engine drops its queue, the clock its buffered media."""
        self.engine_session.interrupt()
        self.clock.flush()
        # the first sample that plays no cut speech: where the members' audio tracks are in
        # the slot in playout (20 ms frames, so mid-slot), else the next slot's start
        cut = self.clock.next_slot * self.clock.samples_per_slot
        sent = [s.playout.audio_sent() for s in self.members if s.playout is not None]
        at = max((x for x in sent if x is not None), default=cut)
        if at < cut and self.clock.silence_from(at):
            cut = at
        self._cut_sample = cut
        due = self._tick_t0 + cut / AUDIO_RATE - asyncio.get_running_loop().time()
        self._cut_unix_s = time.time() + max(0.0, due)
        # started/finished of flushed media will never play: report them as interrupted
        for ev in self._due:
            if ev.event == "finished":
                self._publish_interrupted(ev.utterance_id)
        self._due = []

    def stats(self) -> dict[str, float]:
        out = self.clock.stats()
        try:
            eng = self.engine_session.stats()
        except Exception:  # stats are best effort
            eng = {}
        out["rtf"] = float(eng.get("rtf", 0.0))
        out["errors"] = float(self.errors)
        out["viewers"] = float(len(self.members))
        return out

    async def close(self) -> None:
        """Stop the clock task and the engine session; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.tasks.close()
        self.clock.close()
        try:
            self.engine_session.close()
        except Exception as e:
            log.warning("[%s] engine session close failed: %r", self.label, e)
        log.info("[%s] channel closed", self.label)
