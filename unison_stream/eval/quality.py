"""The visual-quality part of ``unison-stream eval`` (``docs/eval.md``), gathered clip by clip.

:class:`VisualQuality` takes each held-out clip's ground-truth frames and the generated ones,
passes the ground truth through the video codec (:class:`~.generate.CodecRoundTrip`), and
keeps per frame only what the figures need: gradient energies, whether eyes and mouth are
found, embeddings and identity vectors of the feature net (:mod:`.features`). Then
:meth:`~VisualQuality.add_stream` measures the long stream per 10 s window and
:meth:`~VisualQuality.report` gives the flat keys for the model (no suffix), the ground truth
(``_gt``) and the codec round trip (``_codec``). Definitions: :mod:`.visual`, ``docs/eval.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unison_stream.config import UnisonConfig
from unison_stream.data.synth.face import FaceLayout, face_layout
from unison_stream.data.synth.identity import Identity
from unison_stream.data.synth.measure import features_visible
from unison_stream.eval.features import WorldFeatureNet, embed, identity_embedding, load_features
from unison_stream.eval.generate import CodecRoundTrip
from unison_stream.eval.visual import (
    IdentityWindow,
    frechet_distance,
    ghosting,
    gradient_energy,
    verify,
    window_spans,
)

__all__ = ["VISUAL_BARS", "WINDOW_S", "VisualQuality"]

log = logging.getLogger(__name__)

# The visual-quality bar for the bundled model on the test split (docs/eval.md, "Visual
# quality"): (key, "<=" | ">=", value); and `identity_verified_all_windows` must be true.
VISUAL_BARS: tuple[tuple[str, str, float], ...] = (
    ("sharpness_ratio_face", ">=", 0.8),
    ("sharpness_ratio_frame", ">=", 0.8),
    ("fid_world_ratio", "<=", 2.0),  # fid_world ÷ fid_world_codec
    ("feature_visibility", ">=", 0.9),
    ("feature_visibility_stream", ">=", 0.9),
)
WINDOW_S = 10.0  # the long stream is judged per this many seconds
SETS = ("gen", "gt", "codec")
_SUFFIX = {"gen": "", "gt": "_gt", "codec": "_codec"}


@dataclass
class _Frames:
    """What one set (generated, ground truth or codec round trip) keeps of its clips."""

    face: list[np.ndarray] = field(default_factory=list)  # (F,) gradient energy of the face box
    frame: list[np.ndarray] = field(default_factory=list)  # (F,) gradient energy, whole frame
    visible: list[np.ndarray] = field(default_factory=list)  # (F,) eyes and mouth found
    emb: list[np.ndarray] = field(default_factory=list)  # (F, D) feature-net embeddings
    ids: list[np.ndarray] = field(default_factory=list)  # per clip: (F, K) identity vectors
    ghost: list[np.ndarray] = field(default_factory=list)  # (F,) ghosting (bare skin ÷ features)

    def add(
        self, frames: np.ndarray, layout: FaceLayout | None, net: WorldFeatureNet | None
    ) -> None:
        self.frame.append(gradient_energy(frames))
        if layout is not None:
            self.face.append(gradient_energy(frames, layout))
            self.visible.append(features_visible(frames, layout))
            self.ghost.append(ghosting(frames, layout))
        if net is not None:
            self.emb.append(embed(net, frames))
            self.ids.append(identity_embedding(net, frames))


def _mean(parts: list[np.ndarray]) -> float | None:
    return float(np.concatenate(parts).mean()) if parts else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


class VisualQuality:
    """Accumulates sharpness, feature visibility, ``fid_world`` and identity verification."""

    def __init__(self, cfg: UnisonConfig) -> None:
        loaded = load_features()
        if loaded is None:
            log.warning("no feature-net weights: no fid_world, no identity verification")
        self.net: WorldFeatureNet | None = loaded[0] if loaded else None
        self.threshold: float | None = loaded[1].get("verify_threshold") if loaded else None
        self.codec = CodecRoundTrip(cfg)
        self.fps = cfg.media.fps
        self.sets = {k: _Frames() for k in SETS}
        self.layouts: list[FaceLayout | None] = []
        self.keys: list[str] = []  # identity key per clip: other people are other keys
        self.refs: list[np.ndarray] = []  # (K,) each clip's person: mean over its ground truth
        self.stream: list[dict[str, Any]] = []  # per window of the long stream
        self.stream_visible: list[np.ndarray] = []  # (F,) per window: eyes and mouth found
        self.stream_verified: bool | None = None

    def add_clip(self, *, truth: np.ndarray, generated: np.ndarray, row: dict[str, Any]) -> None:
        """One held-out clip: ground-truth and generated frames ``(F, H, W, 3)`` uint8, and its
        manifest row (a synthetic row's ``identity`` gives the face layout). The person's
        reference for identity verification is the mean identity vector of ``truth``."""
        self.add_truth(truth=truth, row=row)
        self.sets["gen"].add(generated, self.layouts[-1], self.net)

    def add_truth(self, *, truth: np.ndarray, row: dict[str, Any]) -> int:
        """A ground-truth clip ``(F, H, W, 3)`` uint8 without generated frames (and its codec
        round trip): a reference that :meth:`state_figures` measures sessions against. Returns
        its clip index. An instance fed only this way serves :meth:`state_figures`, not
        :meth:`report` (which compares the generated set with the ground truth clip by clip)."""
        layout = None
        if "identity" in row:
            h, w = truth.shape[1:3]
            layout = face_layout(Identity.from_json(row["identity"]), width=w, height=h)
        self.layouts.append(layout)
        self.keys.append(str(row.get("identity_key", row.get("id", len(self.keys)))))
        self.sets["gt"].add(truth, layout, self.net)
        if self.codec.available:
            self.sets["codec"].add(self.codec(truth), layout, self.net)
        if self.net is not None:
            self.refs.append(self.sets["gt"].ids[-1].mean(axis=0))
        return len(self.layouts) - 1

    def _others(self, clip: int) -> np.ndarray:
        """``(R, K)`` references of everyone but clip ``clip``'s person."""
        rows = [r for r, k in zip(self.refs, self.keys, strict=True) if k != self.keys[clip]]
        return np.array(rows).reshape(len(rows), self.refs[clip].size)  # (0, K): one person

    def add_stream(self, frames: np.ndarray, *, clip: int = 0) -> None:
        """The long stream of clip ``clip``'s person: identity verification, feature visibility
        and face sharpness (÷ the person's ground-truth clip's) per ``WINDOW_S`` window."""
        layout, gt_face = self.layouts[clip], self.sets["gt"].face
        ids = identity_embedding(self.net, frames) if self.net is not None else None
        face_gt = float(gt_face[clip].mean()) if layout is not None and gt_face else None
        self.stream, self.stream_visible = [], []
        for s, e in window_spans(len(frames), self.fps, WINDOW_S):
            w: dict[str, Any] = {"start_s": round(s / self.fps, 2), "end_s": round(e / self.fps, 2)}
            if layout is not None:
                self.stream_visible.append(features_visible(frames[s:e], layout))
                w["feature_visibility"] = float(self.stream_visible[-1].mean())
                face = float(gradient_energy(frames[s:e], layout).mean())
                w["sharpness_ratio_face"] = _ratio(face, face_gt)
            if ids is not None and self.threshold is not None:
                v = self._verify(ids, clip, s, e, self.threshold)
                w.update(distance=v.distance, distance_other=v.distance_other, verified=v.verified)
            self.stream.append(w)
        verdicts = [w["verified"] for w in self.stream if "verified" in w]
        self.stream_verified = all(verdicts) if verdicts else None

    def state_figures(self, parts: list[tuple[int, np.ndarray]]) -> dict[str, Any]:
        """The visual figures of one state of a session (:mod:`.states`) from ``parts``: each
        ``(clip, frames)`` is a stretch of frames ``(F, H, W, 3)`` showing clip ``clip``'s
        person, measured against that person's ground-truth clip: face sharpness, feature
        visibility as ratios or shares per frame, ghosting against the same people's ground
        truth (each floored at the split's level), ``fid_world`` against the same people's
        ground truth (its ratio: over the codec round trip's of those frames,
        :meth:`_people_fid`), identity verified per ``WINDOW_S`` window of each stretch;
        ``people``: each stretch's person (identity key) with its own face sharpness,
        ghosting and windows verified, to see who fails. Call after every clip was added."""
        gt = self.sets["gt"]
        face: list[np.ndarray] = []
        visible: list[np.ndarray] = []
        ghost: list[np.ndarray] = []
        ghost_gt: list[np.ndarray] = []
        emb: list[np.ndarray] = []
        windows: list[bool] = []
        people: list[dict[str, Any]] = []
        for clip, frames in parts:
            layout = self.layouts[clip]
            person: dict[str, Any] = {"person": self.keys[clip], "frames": len(frames)}
            if layout is not None:
                face.append(gradient_energy(frames, layout) / float(gt.face[clip].mean()))
                visible.append(features_visible(frames, layout))
                ghost.append(ghosting(frames, layout))
                ghost_gt.append(gt.ghost[clip])
                person.update(sharpness_ratio_face=float(face[-1].mean()))
                person.update(ghosting=float(ghost[-1].mean()))
            people.append(person)
            if self.net is None:
                continue
            emb.append(embed(self.net, frames))
            if self.threshold is not None:
                ids = identity_embedding(self.net, frames)
                mine = [
                    self._verify(ids, clip, s, e, self.threshold).verified
                    for s, e in window_spans(len(frames), self.fps, WINDOW_S)
                ]
                person["windows_verified"] = f"{sum(mine)}/{len(mine)}"
                windows += mine
        fid, fid_codec = self._people_fid(emb, sorted({clip for clip, _ in parts}))
        # ghosting against the same people's ground truth, each person's level floored at the
        # world's (every ground-truth clip of the split): a clear bald face with no hand in
        # view reads 0.00, and a ratio to nothing is no figure
        world = _mean(gt.ghost) or 0.0
        floored = [
            np.full(len(g), max(float(t.mean()), world))
            for g, t in zip(ghost, ghost_gt, strict=True)
        ]
        g, g_gt = _mean(ghost), _mean(floored)
        return {
            "frames": int(sum(len(f) for _, f in parts)),
            "sharpness_ratio_face": _mean(face),
            "fid_world": fid,
            "fid_world_ratio": _ratio(fid, fid_codec),
            "feature_visibility": _mean(visible),
            "identity_windows_verified": f"{sum(windows)}/{len(windows)}",
            "identity_verified_all_windows": all(windows) if windows else None,
            "ghosting": g,
            "ghosting_gt": g_gt,
            "ghosting_gt_world": world,
            "ghosting_ratio": _ratio(g, g_gt),
            "people": people,
        }

    @staticmethod
    def face_energy(frames: np.ndarray, layout: FaceLayout) -> float:
        """Mean gradient energy of the face box of ``frames (F, H, W, 3)`` uint8."""
        return float(gradient_energy(frames, layout).mean())

    def picture_figures(
        self,
        frames: np.ndarray,
        *,
        picture: np.ndarray,
        layout: FaceLayout,
        others: list[np.ndarray],
    ) -> dict[str, Any]:
        """Figures of ``frames (F, H, W, 3)`` generated from ``picture (H, W, 3)``, a person
        no clip shows (:mod:`.portraits`): the face's gradient energy ÷ the picture's,
        feature visibility at ``layout``, and identity per ``WINDOW_S`` window verified
        against the picture's identity vector, the ``others`` pictures being other people."""
        out: dict[str, Any] = {
            "frames": len(frames),
            "face_energy_ratio": self.face_energy(frames, layout)
            / self.face_energy(picture[None], layout),
            "feature_visibility": float(features_visible(frames, layout).mean()),
            "identity_verified": None,
        }
        if self.net is None or self.threshold is None:
            return out
        ref = identity_embedding(self.net, picture[None])[0]  # (K,)
        rest = identity_embedding(self.net, np.stack(others)) if others else np.zeros((0, ref.size))
        ids = identity_embedding(self.net, frames)
        windows = [
            verify(ids[s:e], ref, rest, threshold=self.threshold, fps=self.fps, start=s)
            for s, e in window_spans(len(frames), self.fps, WINDOW_S)
        ]
        out["identity_windows"] = [w.to_json() for w in windows]
        out["identity_verified"] = all(w.verified for w in windows)
        return out

    def _verify(
        self, ids: np.ndarray, clip: int, s: int, e: int, threshold: float
    ) -> IdentityWindow:
        """Frames ``[s, e)`` of ``ids (F, K)`` verified as clip ``clip``'s person."""
        return verify(
            ids[s:e],
            self.refs[clip],
            self._others(clip),
            threshold=threshold,
            fps=self.fps,
            start=s,
        )

    def _people_fid(
        self, emb: list[np.ndarray], clips: list[int]
    ) -> tuple[float | None, float | None]:
        """``fid_world`` of embeddings ``emb`` (frames showing the people of ``clips``) against
        those people's ground-truth frames, and the codec round trip's against the same. The
        generated frames are evenly subsampled to as many as the ground truth's, so both
        distances are estimated from equal counts (a state of three people against the
        split's forty would measure who is shown, not how)."""
        gt, codec = self.sets["gt"].emb, self.sets["codec"].emb
        if not emb or not gt:
            return None, None
        truth = np.concatenate([gt[c] for c in clips])
        made = np.concatenate(emb)
        made = made[np.linspace(0, len(made) - 1, min(len(made), len(truth))).round().astype(int)]
        fid = frechet_distance(made, truth)
        if not codec:
            return fid, None
        return fid, frechet_distance(np.concatenate([codec[c] for c in clips]), truth)

    def _clips_verified(self, name: str) -> float | None:
        """Share of clips of set ``name`` whose frames verify as their own reference."""
        ids = self.sets[name].ids
        if not ids or self.threshold is None:
            return None
        ok = [
            verify(
                x, self.refs[i], self._others(i), threshold=self.threshold, fps=self.fps
            ).verified
            for i, x in enumerate(ids)
        ]
        return float(np.mean(ok))

    def report(self) -> dict[str, Any]:
        """The flat figures (suffixes: see the module docstring)."""
        r: dict[str, Any] = {}
        gt = self.sets["gt"]
        for name in SETS:
            s, sfx = self.sets[name], _SUFFIX[name]
            r[f"sharpness_face{sfx}"] = _mean(s.face)
            r[f"sharpness_frame{sfx}"] = _mean(s.frame)
            if name != "gt":
                r[f"sharpness_ratio_face{sfx}"] = _ratio(_mean(s.face), _mean(gt.face))
                r[f"sharpness_ratio_frame{sfx}"] = _ratio(_mean(s.frame), _mean(gt.frame))
            r[f"feature_visibility{sfx}"] = _mean(s.visible)
            r[f"identity_verified_clips{sfx}"] = self._clips_verified(name)
            if name != "gt":
                both = s.emb and gt.emb
                r[f"fid_world{sfx}"] = (
                    frechet_distance(np.concatenate(s.emb), np.concatenate(gt.emb))
                    if both
                    else None
                )
        r["fid_world_ratio"] = _ratio(r["fid_world"], r["fid_world_codec"])
        r["feature_visibility_stream"] = _mean(self.stream_visible)
        r["identity_verify_threshold"] = self.threshold
        r["identity_windows"] = self.stream
        r["identity_verified_all_windows"] = self.stream_verified
        return r
