"""Read a manifest of synthetic *or* real clips into one sample and batch structure.

A manifest is JSONL, one clip per row (schema in ``docs/data.md``). Media references are paths
relative to the manifest's folder: a real clip names video/audio files that PyAV can open
(``"video": "clips/a.mp4"``, ``"audio": "clips/a.wav"``; without ``"audio"`` the video file's
own audio stream is used), a synthetic clip names an array in a tar shard
(``"shards/shard-00000.tar::<id>.npz"``). Optional ``"stems"`` map names (``speech``, ``sfx``,
…) to references of either kind. Optional timings (``phonemes``, ``events``) become the timed
track of vocab ids the model attends to.

Every problem with a row raises :class:`~unison_stream.data.errors.ManifestError` naming the
manifest line and row id: a missing file, a frame or sample rate that differs from the media
config, a clip without audio.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image

from unison_stream.config import MediaConfig
from unison_stream.data.errors import ManifestError
from unison_stream.vocab import EVENT_CLASSES, PAD_ID, SILENCE_ID, event_id, phoneme_id

__all__ = ["Batch", "ManifestDataset", "Sample", "collate", "track_from_row"]

STEM_NAMES: tuple[str, ...] = (
    "speech",
    "sfx",
)  # always present in a batch (zeros + mask if absent)
_ROLE_KEY = {"video": "frames", "audio": "mix"}


@dataclass
class Sample:
    """One clip, as numpy arrays."""

    id: str
    split: str
    frames: np.ndarray  # (F, H, W, 3) uint8
    audio: np.ndarray  # (S,) float32 mix at sample_rate, S = F · sample_rate / fps
    stems: dict[str, np.ndarray]  # name → (S,) float32; only the stems the row has
    transcript: str
    caption: str
    track_ids: np.ndarray  # (N,) int64 vocab ids (phonemes, "_" silence, <event>)
    track_times: np.ndarray  # (N, 2) float32 start, end in seconds
    row: dict[str, Any] = field(repr=False)  # the manifest row (all annotations)


Batch = dict[str, Any]


def track_from_row(row: dict[str, Any], fps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (N,), times (N, 2))`` from a row's optional ``phonemes`` and ``events``, by start."""
    items: list[tuple[float, float, int]] = []
    for p in row.get("phonemes") or []:
        label = p["label"]
        pid = SILENCE_ID if label == "_" else phoneme_id(label)
        items.append((float(p["start"]), float(p["end"]), pid))
    for e in row.get("events") or []:
        onset = float(e["audio_onset"])
        end = float(e.get("audio_end", onset + 1.0 / fps))
        items.append((onset, end, event_id(e["name"])))
    items.sort(key=lambda it: (it[0], it[2]))
    ids = np.array([i for _, _, i in items], np.int64)
    times = np.array([(s, e) for s, e, _ in items], np.float32).reshape(-1, 2)
    return ids, times


class ManifestDataset(torch.utils.data.Dataset[Sample]):
    """Rows of a manifest, optionally one split; ``ds[i]`` decodes clip ``i`` to a :class:`Sample`.

    Rows are parsed and their files checked on construction; media are decoded on access.
    """

    def __init__(
        self, manifest: str | Path, *, split: str | None = None, media: MediaConfig | None = None
    ) -> None:
        self.path = Path(manifest)
        self.root = self.path.parent
        self.media = media or MediaConfig()
        self._tar_index: dict[Path, dict[str, tuple[int, int]]] = {}
        if not self.path.is_file():
            raise ManifestError(str(self.path), 0, "-", "manifest file not found")
        self.rows: list[tuple[int, dict[str, Any]]] = []
        with self.path.open() as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(str(self.path), line_no, "?", f"not JSON ({e})") from e
                self._check_row(line_no, row)
                if split is None or row.get("split") == split:
                    self.rows.append((line_no, row))

    # ---- validation -------------------------------------------------------------------------
    def _error(self, line: int, row: dict[str, Any], problem: str) -> ManifestError:
        return ManifestError(str(self.path), line, str(row.get("id", "?")), problem)

    def _check_row(self, line: int, row: Any) -> None:
        if not isinstance(row, dict) or "id" not in row:
            raise ManifestError(str(self.path), line, "?", "row must be an object with an 'id'")
        if "video" not in row:
            raise self._error(line, row, "no 'video' reference")
        refs = [("video", row["video"])]
        if row.get("audio"):
            refs.append(("audio", row["audio"]))
        refs += [(f"stem {k!r}", v) for k, v in (row.get("stems") or {}).items()]
        for role, ref in refs:
            file = self.root / str(ref).split("::", 1)[0]
            if not file.is_file():
                raise self._error(line, row, f"{role} file {str(file)!r} not found")
        for e in row.get("events") or []:
            if e.get("name") not in EVENT_CLASSES:
                raise self._error(line, row, f"unknown event {e.get('name')!r}")
        for key, want in (("fps", self.media.fps), ("sample_rate", self.media.sample_rate)):
            if key in row and abs(float(row[key]) - want) > 1e-6:
                raise self._error(line, row, f"{key} is {row[key]}, expected {want}")

    # ---- media ------------------------------------------------------------------------------
    def _shard_array(self, line: int, row: dict[str, Any], ref: str, key: str) -> np.ndarray:
        shard, member = ref.split("::", 1)
        path = self.root / shard
        if path not in self._tar_index:
            with tarfile.open(path) as tar:
                self._tar_index[path] = {
                    m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()
                }
        if member not in self._tar_index[path]:
            raise self._error(line, row, f"{member!r} is not in shard {shard!r}")
        offset, size = self._tar_index[path][member]
        with path.open("rb") as f:
            f.seek(offset)
            blob = f.read(size)
        with np.load(io.BytesIO(blob)) as z:
            if key not in z:
                raise self._error(line, row, f"{ref} has no array {key!r}")
            return np.asarray(z[key])

    def _video(self, line: int, row: dict[str, Any], ref: str) -> np.ndarray:
        path = self.root / ref
        try:
            with av.open(str(path)) as c:
                if not c.streams.video:
                    raise self._error(line, row, f"{ref}: no video stream")
                stream = c.streams.video[0]
                fps = float(stream.average_rate or 0)
                if abs(fps - self.media.fps) > 0.01:
                    raise self._error(
                        line, row, f"{ref}: video is {fps:g} fps, expected {self.media.fps:g}"
                    )
                size = (self.media.width, self.media.height)
                frames = []
                for fr in c.decode(stream):
                    img = fr.to_image()
                    if img.size != size:
                        img = img.resize(size, Image.Resampling.BILINEAR)
                    frames.append(np.asarray(img.convert("RGB")))
        except av.FFmpegError as e:
            raise self._error(line, row, f"{ref}: cannot decode video ({e})") from e
        if not frames:
            raise self._error(line, row, f"{ref}: video has no frames")
        return np.stack(frames)

    def _audio(self, line: int, row: dict[str, Any], ref: str, role: str) -> np.ndarray:
        path = self.root / ref
        try:
            with av.open(str(path)) as c:
                if not c.streams.audio:
                    raise self._error(line, row, f"{role} {ref}: no audio stream")
                stream = c.streams.audio[0]
                if stream.rate != self.media.sample_rate:
                    raise self._error(
                        line,
                        row,
                        f"{role} {ref}: audio is {stream.rate} Hz, expected "
                        f"{self.media.sample_rate} Hz (resample it, e.g. ffmpeg -ar "
                        f"{self.media.sample_rate})",
                    )
                to_mono = av.AudioResampler(format="flt", layout="mono", rate=stream.rate)
                chunks = [
                    out.to_ndarray().reshape(-1)
                    for fr in c.decode(stream)
                    for out in to_mono.resample(fr)
                ]
                chunks += [out.to_ndarray().reshape(-1) for out in to_mono.resample(None)]
        except av.FFmpegError as e:
            raise self._error(line, row, f"{role} {ref}: cannot decode audio ({e})") from e
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)

    def _load(self, line: int, row: dict[str, Any], ref: str, role: str) -> np.ndarray:
        if "::" in ref:
            return self._shard_array(line, row, ref, _ROLE_KEY.get(role, role))
        if role == "video":
            return self._video(line, row, ref)
        return self._audio(line, row, ref, role)

    # ---- public -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Sample:
        line, row = self.rows[i]
        frames = self._load(line, row, row["video"], "video")
        audio_ref = row.get("audio") or row["video"]
        audio = self._load(line, row, audio_ref, "audio")
        if len(audio) == 0:
            raise self._error(line, row, f"audio {audio_ref}: no samples")
        spf = round(self.media.sample_rate / self.media.fps)
        n = len(frames) * spf
        stems = {
            name: _fit(self._load(line, row, ref, name), n)
            for name, ref in (row.get("stems") or {}).items()
        }
        ids, times = track_from_row(row, self.media.fps)
        return Sample(
            id=str(row["id"]),
            split=str(row.get("split", "")),
            frames=frames,
            audio=_fit(audio, n),
            stems=stems,
            transcript=str(row.get("transcript", "")),
            caption=str(row.get("caption", "")),
            track_ids=ids,
            track_times=times,
            row=row,
        )


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad ``x`` to ``n`` samples (codecs add priming/padding at the ends)."""
    x = x.astype(np.float32, copy=False)
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def collate(samples: list[Sample]) -> Batch:
    """Pad samples to a batch of torch tensors (shapes in docs/data.md)."""
    b = len(samples)
    f = max(len(s.frames) for s in samples)
    n = max(len(s.audio) for s in samples)
    t = max(1, max(len(s.track_ids) for s in samples))
    h, w = samples[0].frames.shape[1:3]
    frames = torch.zeros(b, f, h, w, 3, dtype=torch.uint8)
    frame_mask = torch.zeros(b, f, dtype=torch.bool)
    audio = torch.zeros(b, n)
    audio_mask = torch.zeros(b, n, dtype=torch.bool)
    stems = {k: torch.zeros(b, n) for k in STEM_NAMES}
    stem_mask = {k: torch.zeros(b, dtype=torch.bool) for k in STEM_NAMES}
    track_ids = torch.full((b, t), PAD_ID, dtype=torch.long)
    track_times = torch.zeros(b, t, 2)
    track_mask = torch.zeros(b, t, dtype=torch.bool)
    for i, s in enumerate(samples):
        frames[i, : len(s.frames)] = torch.from_numpy(s.frames)
        frame_mask[i, : len(s.frames)] = True
        audio[i, : len(s.audio)] = torch.from_numpy(s.audio)
        audio_mask[i, : len(s.audio)] = True
        for k in STEM_NAMES:
            if k in s.stems:
                stems[k][i, : len(s.stems[k])] = torch.from_numpy(s.stems[k])
                stem_mask[k][i] = True
        m = len(s.track_ids)
        track_ids[i, :m] = torch.from_numpy(s.track_ids)
        track_times[i, :m] = torch.from_numpy(s.track_times)
        track_mask[i, :m] = True
    return {
        "ids": [s.id for s in samples],
        "frames": frames,
        "frame_mask": frame_mask,
        "audio": audio,
        "audio_mask": audio_mask,
        "stems": stems,
        "stem_mask": stem_mask,
        "track_ids": track_ids,
        "track_times": track_times,
        "track_mask": track_mask,
        "transcripts": [s.transcript for s in samples],
        "captions": [s.caption for s in samples],
    }
