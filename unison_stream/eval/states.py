"""Every state a viewer sees, driven the way a client drives a session (``docs/eval.md``,
"States").

A conversation is mostly not the avatar speaking: it waits before the first reply, listens
while the user talks, waits while the agent thinks. The speech figures of the eval say nothing
about those stretches, so this module drives sessions through the engine API and cuts what
they stream into the states a viewer sees:

* ``idle``: the first :attr:`StatesConfig.idle_s` seconds of a session nobody talks to;
* ``listening``: a session put in the listening state at once, for ``listening_s``;
* ``session``: ``session_s`` of a conversation (:func:`conversation`): about 70 % idle and
  listening, replies every 10–30 s, one reply interrupted half-way;
* ``transitions``: the frames within ``transition_s`` of each idle → speaking,
  speaking → idle and speaking → listening switch of that conversation;
* ``audio_driven``: the audio-driven mode on the test clips' own speech.

Each state's frames go to :meth:`~unison_stream.eval.quality.VisualQuality.state_figures`
with the person they show, which measures them against that person's ground-truth clip. Idle
and listening are measured against ground truth that does the same: the states world's quiet
and listening clips (``rest``, :func:`rest_people`), whose people the sessions are opened on;
without that world, against the test clips' people, who speak (``truth`` says which).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from unison_stream.data.loader import Sample
from unison_stream.engine import Engine
from unison_stream.eval.generate import next_chunk
from unison_stream.eval.quality import VisualQuality

__all__ = [
    "STATES",
    "STATE_BARS",
    "Conversation",
    "StateFrames",
    "StatesConfig",
    "Switch",
    "conversation",
    "drive_states",
    "quiet",
    "rest_people",
    "state_report",
    "transition_spans",
]

log = logging.getLogger(__name__)

STATES = ("idle", "listening", "transitions", "session", "audio_driven")
REST = ("idle", "listening")  # the states measured against quiet ground truth when there is one
# a states-world clip's ``kind`` → the session state it shows
REST_KINDS = {"quiet": "idle", "listening": "listening"}
SWITCHES = (("idle", "speaking"), ("speaking", "idle"), ("speaking", "listening"))


@dataclass(frozen=True)
class StatesConfig:
    """How long each state is driven (seconds of media) and on how many people."""

    idle_s: float = 30.0
    listening_s: float = 30.0
    session_s: float = 300.0  # five minutes of conversation
    transition_s: float = 1.0  # frames this close to a switch are the switch's
    people: int = 3  # test clips whose person is driven idle and listening (no states world)
    rest_people: int = 0  # quiet / listening references driven per state; 0: every one
    first_reply_s: float = 5.0  # the conversation opens idle this long
    user_turn_s: tuple[float, float] = (5.0, 15.0)  # the user talks (avatar listens)
    think_s: tuple[float, float] = (1.0, 3.0)  # the agent thinks (avatar idle)
    interrupt_reply: int = 3  # this reply (from 0) is interrupted half-way
    seed: int = 0


@dataclass(frozen=True)
class Switch:
    """The stream's state changed between frame ``frame − 1`` and ``frame``."""

    frame: int
    before: str  # "idle" | "listening" | "speaking"
    after: str


@dataclass
class Conversation:
    """What a driven session streamed: frames, the state each frame shows, its switches."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    states: list[str] = field(default_factory=list)  # (F,) the chunk's state per frame
    actions: list[tuple[float, str]] = field(default_factory=list)  # (media s, what was done)

    @property
    def switches(self) -> list[Switch]:
        s = self.states
        return [Switch(i, s[i - 1], s[i]) for i in range(1, len(s)) if s[i] != s[i - 1]]

    def share(self, state: str) -> float:
        return self.states.count(state) / max(1, len(self.states))


def _run(
    engine: Engine,
    person: Sample,
    *,
    seconds: float,
    actions: list[tuple[float, str, str]],
    seed: int,
    desc: str,
    progress: bool,
) -> Conversation:
    """Open a session on ``person``'s first frame, do each ``(media s, verb,
    argument)`` of ``actions`` once the stream has played up to its time, and collect
    ``seconds`` of media. Verbs: ``say`` (argument: text), ``state`` (idle | listening),
    ``interrupt``."""
    cs = engine.cfg.chunk_seconds()
    n = max(1, round(seconds / cs))
    todo = sorted(actions, key=lambda a: a[0])
    frames: list[np.ndarray] = []
    states: list[str] = []
    done: list[tuple[float, str]] = []
    # no caption, as the page and the SDK open sessions: the engine's default one
    s = engine.open_session(seed=seed, reference_frame=person.frames[0])
    try:
        for k in tqdm(range(n), desc=desc, unit="chunk", disable=not progress, file=sys.stderr):
            while todo and todo[0][0] <= k * cs:
                _, verb, arg = todo.pop(0)
                if verb == "say":
                    s.say(arg, utterance_id=f"reply-{len(done)}")
                elif verb == "state":
                    s.set_state(arg)
                else:
                    s.interrupt()
                done.append((round(k * cs, 2), f"{verb} {arg}".strip()))
            c = next_chunk(s)  # raises EvalStreamError on a stall or a failed utterance
            frames.append(c.video)
            states += [c.state] * len(c.video)
    finally:
        s.close()
    return Conversation(np.concatenate(frames), states, done)


def quiet(
    engine: Engine, person: Sample, *, state: str, seconds: float, seed: int, progress: bool
) -> Conversation:
    """A session nobody talks to (``idle``), or one put in the listening state at once."""
    actions = [(0.0, "state", "listening")] if state == "listening" else []
    return _run(
        engine, person, seconds=seconds, actions=actions, seed=seed, desc=state, progress=progress
    )


def conversation(
    engine: Engine, person: Sample, *, texts: list[str], cfg: StatesConfig, progress: bool
) -> Conversation:
    """``cfg.session_s`` of a conversation with ``person``: idle at first, then replies (the
    ``texts`` in turn, one or two sentences each), each followed by the user's turn
    (listening) and the agent's thinking (idle); reply ``cfg.interrupt_reply`` is interrupted
    half-way and the user talks at once. Times come from the planner's durations, so the
    schedule is the same on every run."""
    rng = np.random.default_rng(cfg.seed)
    actions: list[tuple[float, str, str]] = []
    t, i, reply = cfg.first_reply_s, 0, 0
    while t < cfg.session_s:
        said = [texts[(i + j) % len(texts)] for j in range(int(rng.integers(1, 3)))]
        i += len(said)
        text = " ".join(said)
        actions.append((t, "say", text))
        length = engine.planner.plan(text).duration_s
        if reply == cfg.interrupt_reply:
            length *= 0.5
            actions.append((t + length, "interrupt", ""))
        t += length
        actions.append((t, "state", "listening"))
        t += float(rng.uniform(*cfg.user_turn_s))
        actions.append((t, "state", "idle"))
        t += float(rng.uniform(*cfg.think_s))
        reply += 1
    return _run(
        engine,
        person,
        seconds=cfg.session_s,
        actions=actions,
        seed=cfg.seed,
        desc="conversation",
        progress=progress,
    )


def transition_spans(c: Conversation, *, fps: float, within_s: float) -> list[tuple[int, int]]:
    """``[start, end)`` frame spans within ``within_s`` of each switch of :data:`SWITCHES`
    (spans that overlap are merged)."""
    half = round(within_s * fps)
    spans = sorted(
        (max(0, w.frame - half), min(len(c.states), w.frame + half))
        for w in c.switches
        if (w.before, w.after) in SWITCHES
    )
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


# The bar each state's figures must pass: (key, "<=" | ">=", value); and
# ``identity_verified_all_windows`` must be true.
STATE_BARS: tuple[tuple[str, str, float], ...] = (
    ("sharpness_ratio_face", ">=", 0.8),
    ("fid_world_ratio", "<=", 2.0),
    ("feature_visibility", ">=", 0.9),
    ("ghosting_ratio", "<=", 1.2),  # ghosting ÷ the same people's ground truth
)


def _bars(figures: dict[str, Any]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {
        key: None if figures.get(key) is None else _holds(figures[key], op, value)
        for key, op, value in STATE_BARS
    }
    out["identity_verified_all_windows"] = figures.get("identity_verified_all_windows")
    return out


def _holds(x: float, op: str, value: float) -> bool:
    return x <= value if op == "<=" else x >= value


@dataclass
class StateFrames:
    """Each state's stretches: ``(clip whose person they show, frames (F, H, W, 3))``; the
    clips of :data:`REST` states index the quiet references when ``rest_truth`` is set (else
    the test split's clips, as every other state's do); ``shown``: the clip id and picture
    (H, W, 3) each state's first stretch was opened on."""

    parts: dict[str, list[tuple[int, np.ndarray]]] = field(
        default_factory=lambda: {s: [] for s in STATES}
    )
    shown: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    session: Conversation | None = None
    rest_truth: bool = False


def rest_people(rows: list[dict[str, Any]], *, per_state: int = 0) -> dict[str, list[int]]:
    """The first ``per_state`` clips (0: every one) of each :data:`REST` state among the
    manifest ``rows`` of a states world's split (their ``kind``: quiet → idle, listening →
    listening)."""
    out: dict[str, list[int]] = {state: [] for state in REST}
    for i, row in enumerate(rows):
        state = REST_KINDS.get(str(row.get("kind")))
        if state is not None and (per_state <= 0 or len(out[state]) < per_state):
            out[state].append(i)
    return out


def drive_states(
    engine: Engine,
    people: list[Sample],
    *,
    texts: list[str],
    cfg: StatesConfig,
    rest: dict[str, list[tuple[int, Sample]]] | None = None,
    progress: bool = True,
) -> StateFrames:
    """Drive ``idle`` and ``listening`` on each ``(clip, sample)`` of ``rest[state]`` (quiet
    references: the clip indexes them), or without ``rest`` on each of the first
    ``cfg.people`` of ``people`` (clip ``i`` of the split is ``people[i]``); the conversation
    on ``people[0]``, and cut its transitions. The audio-driven state is added by the caller
    (it drives the clips' speech for other figures too)."""
    out = StateFrames(rest_truth=rest is not None)
    fps = engine.cfg.media.fps
    for state, seconds in (("idle", cfg.idle_s), ("listening", cfg.listening_s)):
        on = rest[state] if rest is not None else list(enumerate(people[: cfg.people]))
        for seed, (clip, person) in enumerate(on):
            c = quiet(engine, person, state=state, seconds=seconds, seed=seed, progress=progress)
            keep = np.array([s == state for s in c.states])
            out.parts[state].append((clip, c.frames[keep]))
            out.shown.setdefault(state, (person.id, person.frames[0]))
    c = conversation(engine, people[0], texts=texts, cfg=cfg, progress=progress)
    out.session = c
    out.parts["session"].append((0, c.frames))
    out.shown["session"] = out.shown["transitions"] = (people[0].id, people[0].frames[0])
    for a, b in transition_spans(c, fps=fps, within_s=cfg.transition_s):
        out.parts["transitions"].append((0, c.frames[a:b]))
    log.info(
        "conversation: %.0f s, speaking %.0f %%, listening %.0f %%, %d switches, %d actions",
        len(c.frames) / fps,
        100 * c.share("speaking"),
        100 * c.share("listening"),
        len(c.switches),
        len(c.actions),
    )
    return out


def state_report(
    frames: StateFrames, visual: VisualQuality, rest: VisualQuality | None = None
) -> dict[str, Any]:
    """``states.<state>.<figure>`` and each state's bars (:data:`STATE_BARS`); the
    :data:`REST` states are measured against ``rest`` (the quiet references) when
    ``frames.rest_truth``, each state's ``truth`` naming its ground truth."""
    report: dict[str, Any] = {}
    for state, parts in frames.parts.items():
        if not parts:
            report[state] = None
            continue
        quiet_truth = frames.rest_truth and state in REST
        if quiet_truth and rest is None:
            raise ValueError(f"{state}: driven on quiet references, but none was given")
        figures = (rest if quiet_truth and rest is not None else visual).state_figures(parts)
        kind = next(k for k, v in REST_KINDS.items() if v == state) if quiet_truth else "speech"
        figures["truth"] = f"{kind} clips"
        figures["bars"] = _bars(figures)
        report[state] = figures
    if frames.session is not None:
        c = frames.session
        report["session_shares"] = {
            s: round(c.share(s), 3) for s in ("idle", "listening", "speaking")
        }
        report["session_switches"] = len(c.switches)
    return report
