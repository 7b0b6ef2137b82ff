"""``unison-stream eval``: every metric of docs/eval.md on a held-out split, model beside truth.

For each of the first ``limit`` clips of the split (all when ``limit`` ≤ 0) the engine says
the clip's transcript as the clip's person (:mod:`~unison_stream.eval.generate`); lip sync,
effect recall and alignment and sentence identification are measured on what it streams and
on the ground-truth clip alike. One long stream (the first clip's person saying the clips'
sentences back to back) gives identity drift. The visual-quality figures —
sharpness, ``fid_world``, feature visibility, identity verification per 10 s window — come
from :class:`~unison_stream.eval.quality.VisualQuality` for the model, the ground truth and
the ground truth through the video codec; ``grid`` writes a picture of generated beside
ground-truth frames. :mod:`~unison_stream.eval.portraits` adds pictures no training run saw
(custom avatars). Definitions: ``docs/eval.md``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unison_stream.codecs.sentence_id import SentenceIdentifier
from unison_stream.config import UnisonConfig
from unison_stream.data.loader import ManifestDataset, Sample
from unison_stream.engine import Engine
from unison_stream.eval.beyond import beyond_grammar, spoken
from unison_stream.eval.generate import drive_one, say_one, stream
from unison_stream.eval.grid import GridCell, GridRow, write_grid
from unison_stream.eval.harmony import clip_harmony, summarise_harmony
from unison_stream.eval.identity import drift, nearest_reference, reference_distance
from unison_stream.eval.intelligibility import sentence_accuracy
from unison_stream.eval.lipsync import LipSync, lip_sync, summarise_lip_sync
from unison_stream.eval.portraits import portraits_report
from unison_stream.eval.quality import VISUAL_BARS, VisualQuality
from unison_stream.eval.sfx import (
    EventResult,
    audio_onset,
    false_alarm_rate,
    summarise_by_class,
    summarise_events,
    visual_contact,
)
from unison_stream.eval.states import (
    StateFrames,
    StatesConfig,
    drive_states,
    rest_people,
    state_report,
)

__all__ = ["BARS", "evaluate", "ground_truth_events", "ratio"]

log = logging.getLogger(__name__)

# The sync and effects bar for the bundled model on the test split (docs/eval.md, "Sync,
# effects, identity and intelligibility"): (key, "<=" | ">=", value).
BARS: tuple[tuple[str, str, float], ...] = (
    ("lipsync_offset_ms", "<=", 40.0),
    ("lipsync_corr_ratio", ">=", 0.7),
    ("sfx_recall", ">=", 0.8),
    ("sfx_align_ms", "<=", 40.0),
)
BEYOND_CLIPS = 12  # test clips driven again; their people say the out-of-grammar sentences


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, None when either is missing or ``b`` is 0."""
    return None if a is None or b is None or b == 0 else a / b


def _sentence(row: dict[str, Any]) -> str:
    """The spoken sentence of a manifest row (its transcript without tags)."""
    return str(row.get("sentence") or spoken(row.get("transcript", "")))


def _events(
    frames: np.ndarray, mix: np.ndarray, contacts: list[tuple[str, float]], sr: int, fps: float
) -> list[EventResult]:
    planned = [round(t * fps) for _, t in contacts]
    return [
        EventResult(
            name,
            t,
            audio_onset(mix, sr, t),
            visual_contact(frames, round(t * fps), name, fps, gestures=planned),
        )
        for name, t in contacts
    ]


def ground_truth_events(s: Sample, fps: float) -> list[tuple[str, float]]:
    """(class, contact s) of a clip's annotated events (the visual contact, else the onset)."""
    return [
        (e["name"], float(e.get("visual_contact", e["audio_onset"])))
        for e in s.row.get("events") or []
    ]


def evaluate(
    engine: Engine,
    manifest: Path,
    *,
    split: str = "test",
    limit: int = 0,
    stream_seconds: float = 60.0,
    progress: bool = True,
    grid: Path | None = None,
    beyond: bool = True,
    states: StatesConfig | None = None,
    portraits: bool = True,
    states_truth: Path | None = None,
) -> dict[str, Any]:
    """Run every metric; returns the flat report that ``--json`` prints. With ``grid`` a PNG
    of generated beside ground-truth frames is written there; ``beyond`` adds the
    out-of-grammar and other-voice figures (``beyond_grammar``); ``states`` the figures of
    every state a viewer sees (``states``: idle, listening, transitions, a conversation and
    the audio-driven mode, :mod:`.states`); ``portraits`` the figures of pictures no training
    run saw (``portraits``, :mod:`.portraits`); ``states_truth`` the states world's manifest,
    whose quiet and listening clips idle and listening are measured against."""
    t0 = time.perf_counter()
    cfg = engine.cfg
    sr, fps = cfg.media.sample_rate, cfg.media.fps
    ds = ManifestDataset(manifest, split=split, media=cfg.media)
    if len(ds) == 0:
        raise ValueError(f"{manifest}: no clip in split {split!r}")
    n = len(ds) if limit <= 0 else min(limit, len(ds))
    gt_sync: list[LipSync] = []
    gen_sync: list[LipSync] = []
    gt_ev: list[EventResult] = []
    gen_ev: list[EventResult] = []
    gt_speech, gen_speech, sentences, refs = [], [], [], []
    within: list[float] = []
    alarms: dict[str, list[float]] = {"gen": [], "gt": []}
    harmony: dict[str, list[dict[str, float | None]]] = {"gen": [], "gt": []}
    visual = VisualQuality(cfg)
    text_mode: np.ndarray | None = None  # the first clip's generated frames, for the grid
    for i in tqdm(
        range(n), desc=f"eval {split}", unit="clip", disable=not progress, file=sys.stderr
    ):
        s = ds[i]
        speech = s.stems.get("speech", s.audio)
        ref = s.frames[0]
        refs.append(ref)
        sentences.append(_sentence(s.row))
        gt_speech.append(speech)
        gt_sync.append(lip_sync(s.frames, speech, sr, fps))
        contacts = ground_truth_events(s, fps)
        gt_ev += _events(s.frames, s.audio, contacts, sr, fps)
        _probe(alarms["gt"], s.stems.get("sfx"), [t for _, t in contacts], sr)
        if "sfx" in s.stems:
            harmony["gt"].append(clip_harmony(speech, s.stems["sfx"], [t for _, t in contacts], sr))
        within.append(float(reference_distance(s.frames, ref).mean()))
        u = say_one(engine, text=s.transcript, reference_frame=ref, caption=s.caption, seed=i)
        gen_speech.append(u.speech)
        gen_sync.append(lip_sync(u.frames, u.speech, sr, fps))
        gen_ev += _events(u.frames, u.mix, list(u.contacts), sr, fps)
        _probe(alarms["gen"], u.sfx, [t for _, t in u.contacts], sr)
        if u.stems and "sfx" in s.stems:
            harmony["gen"].append(clip_harmony(u.speech, u.sfx, [t for _, t in u.contacts], sr))
        visual.add_clip(truth=s.frames, generated=u.frames, row=s.row)
        if i == 0:
            text_mode = u.frames

    log.info("sentence identification (pocketsphinx) on %d + %d clips", n, n)
    candidates = sorted({_sentence(row) for _, row in ds.rows})
    ident = SentenceIdentifier(candidates, sample_rate=sr)
    acc_gen = sentence_accuracy(ident, gen_speech, sentences)
    acc_gt = sentence_accuracy(ident, gt_speech, sentences)

    first = ds[0]
    frames = stream(
        engine,
        texts=[first.transcript, *(ds.rows[i][1].get("transcript", "") for i in range(1, n))],
        reference_frame=first.frames[0],
        caption=first.caption,
        seconds=stream_seconds,
        progress=progress,
    )
    visual.add_stream(frames, clip=0)
    if grid is not None:
        assert text_mode is not None, "the grid shows the first clip, so the split has one"
        speech = first.stems.get("speech", first.audio)
        driven = drive_one(
            engine, speech=speech, reference_frame=first.frames[0], caption=first.caption, seed=0
        )
        rows = _grid_rows(first, text_mode, driven.frames, frames, fps)
    d = drift(frames, first.frames[0], fps)
    last = frames[-round(d["window_s"] * fps) :]
    others = [
        float(reference_distance(np.stack(refs[:k] + refs[k + 1 :]), r).mean())
        for k, r in enumerate(refs)
        if len(refs) > 1
    ]

    ls_gen, ls_gt = summarise_lip_sync(gen_sync), summarise_lip_sync(gt_sync)
    ev_gen, ev_gt = summarise_events(gen_ev), summarise_events(gt_ev)
    report: dict[str, Any] = {
        "split": split,
        "clips": n,
        "events": ev_gen["events"],
        "events_gt": ev_gt["events"],
        "lipsync_offset_ms": ls_gen["offset_ms"],
        "lipsync_offset_signed_ms": ls_gen["offset_signed_ms"],
        "lipsync_corr": ls_gen["corr"],
        "lipsync_corr_ratio": ratio(ls_gen["corr"], ls_gt["corr"]),
        "lipsync_unmeasured": ls_gen["unmeasured"],
        "lipsync_offset_ms_gt": ls_gt["offset_ms"],
        "lipsync_corr_gt": ls_gt["corr"],
        "sfx_recall": ev_gen["recall"],
        "sfx_align_ms": ev_gen["align_ms"],
        "sfx_aligned": ev_gen["aligned"],
        "sfx_false_alarm": float(np.mean(alarms["gen"])) if alarms["gen"] else None,
        "sfx_recall_gt": ev_gt["recall"],
        "sfx_align_ms_gt": ev_gt["align_ms"],
        "sfx_false_alarm_gt": float(np.mean(alarms["gt"])) if alarms["gt"] else None,
        "sfx_by_class": summarise_by_class(gen_ev),
        "sfx_by_class_gt": summarise_by_class(gt_ev),
        **_harmony(harmony),
        "identity_drift": d["ratio"],
        "identity_distance_first": d["first"],
        "identity_distance_last": d["last"],
        "identity_window_s": d["window_s"],
        "identity_recognised": bool(nearest_reference(last, np.stack(refs)) == 0),
        "identity_distance_gt": float(np.mean(within)),
        "identity_distance_other": float(np.mean(others)) if others else None,
        "stream_seconds": len(frames) / fps,
        "sentence_id_accuracy": acc_gen,
        "sentence_id_accuracy_gt": acc_gt,
        "sentence_id_ratio": ratio(acc_gen, acc_gt),
        "sentence_candidates": len(candidates),
    }
    seen = StateFrames()
    rest: VisualQuality | None = None
    if states is not None:
        texts = [ds.rows[i][1].get("transcript", "") for i in range(n)]
        quiet_people, rest = _rest_references(
            states_truth, split, cfg, per_state=states.rest_people
        )
        seen = drive_states(
            engine, [ds[i] for i in range(min(n, states.people))], texts=texts, cfg=states,
            rest=quiet_people, progress=progress,
        )  # fmt: skip

    def keep(name: str, clip: int, frames: np.ndarray) -> None:
        if states is not None and name == "espeak_in":  # the test clips' own speech
            seen.parts["audio_driven"].append((clip, frames))
            seen.shown.setdefault("audio_driven", (ds[clip].id, ds[clip].frames[0]))

    report["beyond_grammar"] = (
        beyond_grammar(
            engine,
            [ds[i] for i in range(min(n, BEYOND_CLIPS))],
            in_grammar=sentences,
            in_grammar_speech=gen_speech,
            gt_corr=ls_gt["corr"],
            limit=limit,
            progress=progress,
            keep=keep,
        )
        if beyond
        else None
    )
    if states is not None:
        report["states"] = state_report(seen, visual, rest)
    report["portraits"] = (
        portraits_report(engine, ds, visual, progress=progress) if portraits else None
    )
    if grid is not None:
        write_grid(grid, rows + _state_rows(seen, fps))
        log.info("wrote the grid of generated beside ground-truth frames to %s", grid)
    report["bars"] = {
        key: None if report[key] is None else bool(_holds(report[key], op, value))
        for key, op, value in BARS
    }
    report["bars"]["identity_recognised"] = report["identity_recognised"]
    report.update(visual.report())
    report["visual_bars"] = {
        key: None if report[key] is None else bool(_holds(report[key], op, value))
        for key, op, value in VISUAL_BARS
    }
    report["visual_bars"]["identity_verified_all_windows"] = report["identity_verified_all_windows"]
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    return report


def _harmony(h: dict[str, list[dict[str, float | None]]]) -> dict[str, float | None]:
    """The ``harmony_*`` keys; the generated ones None for a model without stems."""
    if len(h["gen"]) == len(h["gt"]):
        return summarise_harmony(h["gen"], h["gt"])
    none = [dict.fromkeys(r, None) for r in h["gt"]]  # one-stream model: nothing to compare
    return summarise_harmony(none, h["gt"])


def _grid_rows(
    first: Sample, said: np.ndarray, driven: np.ndarray, streamed: np.ndarray, fps: float
) -> list[GridRow]:
    """Text mode and audio-driven mode of the first clip at a quarter, half and three quarters
    of it, and the long stream at its start, middle and end, each beside ground truth."""
    truth = first.frames

    def clip_row(title: str, frames: np.ndarray) -> GridRow:
        n = min(len(frames), len(truth))
        at = [n // 4, n // 2, 3 * n // 4]
        cells = [GridCell(f"{k / fps:.2f} s: generated | truth", frames[k], truth[k]) for k in at]
        return GridRow(f"{title}, clip {first.id}", tuple(cells))

    end = len(streamed) - 1
    at = [0, end // 2, end]
    return [
        clip_row("text mode (the clip's transcript)", said),
        clip_row("audio-driven mode (the clip's speech)", driven),
        GridRow(
            f"long stream ({len(streamed) / fps:.0f} s, the same person)",
            tuple(
                GridCell(f"{k / fps:.0f} s: generated | reference", streamed[k], truth[0])
                for k in at
            ),
        ),
    ]


def _state_rows(seen: StateFrames, fps: float) -> list[GridRow]:
    """A row per state: its first stretch at its start, middle and end, each beside the
    picture the session was opened on."""
    rows = []
    for state, parts in seen.parts.items():
        if not parts or state not in seen.shown:
            continue
        _, frames = parts[0] if state != "transitions" else parts[min(2, len(parts) - 1)]
        clip_id, picture = seen.shown[state]
        at = [0, len(frames) // 2, len(frames) - 1]
        cells = tuple(
            GridCell(f"{k / fps:.1f} s: generated | picture", frames[k], picture) for k in at
        )
        rows.append(GridRow(f"state {state}, person of clip {clip_id}", cells))
    return rows


def _rest_references(
    manifest: Path | None, split: str, cfg: UnisonConfig, *, per_state: int
) -> tuple[dict[str, list[tuple[int, Sample]]] | None, VisualQuality | None]:
    """The quiet references of the idle and listening states: the states world's ``split``
    clips (``manifest``), every one added as ground truth (the quiet and listening people
    with everyone else as the others identity verification must tell apart), and the first
    ``per_state`` (0: every) quiet and listening clips to drive sessions on. ``(None, None)``
    without a manifest or without such clips: those states are then measured against speech
    clips."""
    if manifest is None:
        return None, None
    ds = ManifestDataset(manifest, split=split, media=cfg.media)
    picked = rest_people([row for _, row in ds.rows], per_state=per_state)
    if not all(picked.values()):
        log.warning("%s: no quiet or listening clip in split %r", manifest, split)
        return None, None
    truth = VisualQuality(cfg)
    samples = [ds[i] for i in range(len(ds))]
    for s in tqdm(samples, desc="quiet references", unit="clip", file=sys.stderr):
        truth.add_truth(truth=s.frames, row=s.row)
    return {state: [(i, samples[i]) for i in clips] for state, clips in picked.items()}, truth


def _probe(out: list[float], sfx: np.ndarray | None, contacts: list[float], sr: int) -> None:
    rate = None if sfx is None else false_alarm_rate(sfx, sr, contacts)
    if rate is not None:
        out.append(rate)


def _holds(x: float, op: str, value: float) -> bool:
    return x <= value if op == "<=" else x >= value
