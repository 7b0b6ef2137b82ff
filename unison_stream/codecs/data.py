"""Codec training data: a small cache of synthetic-world clips, and random crops from it.

The codecs only need pixels and waveforms, so this module renders clips with
:func:`unison_stream.data.synth.make_clip` and stores, per split, the frames and the three audio
stems (speech, SFX, mix) concatenated into arrays with clip offsets (``<dir>/<split>.npz`` plus
``<split>.json`` with the transcripts and voices). Val/test clips use identities *and*
sentences never seen in train (held out by ``identity_key`` / ``sentence_key``), as the dataset
splits of ``unison_stream.data`` do.

Crops never cross a clip boundary and start on a latent-frame boundary, so the time grid of
every crop matches the one the model sees.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unison_stream.data.synth import WorldConfig, make_clip, sample_spec
from unison_stream.data.synth.face import face_layout
from unison_stream.data.synth.identity import Identity, identity_key, sample_identity
from unison_stream.data.synth.text import Script, sample_script, sample_sentence

__all__ = ["CACHE_COUNTS", "ClipStore", "build_cache", "load_split"]

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
CACHE_COUNTS = {"train": 320, "val": 24, "test": 40}  # clips per split of the cache


@dataclass
class ClipStore:
    """One split held in memory: frames and stems concatenated, with per-clip offsets."""

    frames: np.ndarray  # (ΣF, H, W, 3) uint8
    frame_off: np.ndarray  # (n+1,) int64, clip i owns frames[frame_off[i]:frame_off[i+1]]
    audio: dict[str, np.ndarray]  # stem → (ΣS,) float32, stems: speech, sfx, mix
    audio_off: np.ndarray  # (n+1,) int64
    meta: list[dict[str, Any]]  # per clip: sentence, transcript, voice, clip_id, identity

    def __len__(self) -> int:
        return len(self.meta)

    def clip_frames(self, i: int) -> np.ndarray:
        return self.frames[self.frame_off[i] : self.frame_off[i + 1]]

    def clip_audio(self, i: int, stem: str) -> np.ndarray:
        return self.audio[stem][self.audio_off[i] : self.audio_off[i + 1]]

    def _windows(
        self, rng: np.random.Generator, n: int, frames: int, size: int, stride: int
    ) -> list[tuple[int, int, int, int]]:
        """``n`` random crop windows (clip, first frame, y, x): ``frames`` frames from a
        multiple of ``stride`` frames (a latent frame), ``size``² pixels from a multiple of 8,
        so crops share the latent grid of full frames."""
        out = []
        h, w = self.frames.shape[1:3]
        for _ in range(n):
            while True:
                i = int(rng.integers(len(self)))
                length = int(self.frame_off[i + 1] - self.frame_off[i])
                if length >= frames:
                    break
            t0 = int(self.frame_off[i]) + stride * int(
                rng.integers((length - frames) // stride + 1)
            )
            y = 8 * int(rng.integers((h - size) // 8 + 1))
            x = 8 * int(rng.integers((w - size) // 8 + 1))
            out.append((i, t0, y, x))
        return out

    def video_crops(
        self, rng: np.random.Generator, n: int, frames: int, size: int, stride: int
    ) -> np.ndarray:
        """``n`` random crops of ``frames`` consecutive frames, ``size``² pixels → (n, T, s, s, 3)
        (windows: :meth:`_windows`)."""
        out = np.empty((n, frames, size, size, 3), np.uint8)
        for k, (_, t0, y, x) in enumerate(self._windows(rng, n, frames, size, stride)):
            out[k] = self.frames[t0 : t0 + frames, y : y + size, x : x + size]
        return out

    def video_crops_with_reference(
        self, rng: np.random.Generator, n: int, frames: int, size: int, stride: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Crops as :meth:`video_crops` → (n, T, s, s, 3), and for each the same window of one
        random frame of its clip — the person's picture with another mouth, blink or gesture,
        as a reference-reading decoder gets it → (n, s, s, 3) — of its eye mask
        (:meth:`eye_mask`) → (n, s, s) and of its mouth mask (:meth:`mouth_mask`) → (n, s, s)."""
        out = np.empty((n, frames, size, size, 3), np.uint8)
        ref = np.empty((n, size, size, 3), np.uint8)
        eyes = np.empty((n, size, size), np.float32)
        mouth = np.empty((n, size, size), np.float32)
        for k, (i, t0, y, x) in enumerate(self._windows(rng, n, frames, size, stride)):
            out[k] = self.frames[t0 : t0 + frames, y : y + size, x : x + size]
            r = int(rng.integers(self.frame_off[i], self.frame_off[i + 1]))
            ref[k] = self.frames[r, y : y + size, x : x + size]
            eyes[k] = self.eye_mask(i)[y : y + size, x : x + size]
            mouth[k] = self.mouth_mask(i)[y : y + size, x : x + size]
        return out, ref, eyes, mouth

    def _part_mask(self, i: int, part: str, margin: float) -> np.ndarray:
        """``(H, W)`` float32: 1 inside the boxes of ``part`` ("eyes" or "mouth") of clip
        ``i``'s face layout, widened by ``margin`` pixels, else 0; all zeros for a clip cached
        without its identity."""
        h, w = self.frames.shape[1:3]
        mask = np.zeros((h, w), np.float32)
        ident = self.meta[i].get("identity")
        if not ident:
            return mask
        layout = face_layout(Identity.from_json(ident), width=w, height=h)
        boxes = layout.eyes if part == "eyes" else (layout.mouth,)
        for x0, y0, x1, y1 in boxes:
            ya, yb = max(0, int(y0 - margin)), min(h, int(np.ceil(y1 + margin)))
            xa, xb = max(0, int(x0 - margin)), min(w, int(np.ceil(x1 + margin)))
            mask[ya:yb, xa:xb] = 1.0
        return mask

    def eye_mask(self, i: int, margin: float = 3.0) -> np.ndarray:
        """``(H, W)`` float32: 1 inside clip ``i``'s two eye boxes (the world's face layout of
        its identity, widened by ``margin`` pixels for the head's sway), else 0; all zeros for
        a clip cached without its identity."""
        return self._part_mask(i, "eyes", margin)

    def mouth_mask(self, i: int, margin: float = 3.0) -> np.ndarray:
        """``(H, W)`` float32: 1 inside clip ``i``'s mouth box (the widest, most open mouth
        of its face layout, lips included — where eval's ``mouth_opening`` finds the interior
        — widened by ``margin`` pixels for the head's sway), else 0; zeros without identity."""
        return self._part_mask(i, "mouth", margin)

    def effect_onsets(self, threshold: float = 0.05, frame: int = 80) -> np.ndarray:
        """Sample positions where the SFX stem's RMS (``frame``-sample frames) rises through
        ``threshold`` (−26 dBFS; effects peak at −12…−3 dBFS, the SFX stem is silent between)."""
        x = self.audio["sfx"]
        env = np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1))
        up = np.flatnonzero((env[1:] >= threshold) & (env[:-1] < threshold)) + 1
        return up * frame

    def effect_crops(
        self, rng: np.random.Generator, n: int, samples: int, hop: int, onsets: np.ndarray
    ) -> np.ndarray:
        """``n`` crops of ``samples`` samples (SFX or mix stem) each holding an effect onset
        after its first latent frame and ≥ 0.1 s before its end → (n, samples) float32."""
        out = np.empty((n, samples), np.float32)
        total = len(self.audio["sfx"])
        for k in range(n):
            at = int(onsets[int(rng.integers(len(onsets)))])
            # start on a latent frame with the onset in [t0 + hop, t0 + S − 0.1 s]
            k_lo, k_hi = -(-max(0, at - samples + 1600) // hop), (at - hop) // hop
            t0 = hop * (k_lo + int(rng.integers(max(1, k_hi - k_lo + 1))))
            t0 = min(max(0, t0), total - samples)
            out[k] = self.audio["sfx" if rng.random() < 0.5 else "mix"][t0 : t0 + samples]
        return out

    def audio_crops(
        self, rng: np.random.Generator, n: int, samples: int, hop: int, stems: tuple[str, ...]
    ) -> np.ndarray:
        """``n`` random crops of ``samples`` samples from random stems → (n, samples) float32.

        Crops start on a multiple of ``hop`` (one latent frame). Near-silent crops are redrawn
        a few times so the batch carries signal.
        """
        out = np.empty((n, samples), np.float32)
        for k in range(n):
            for _ in range(8):
                i = int(rng.integers(len(self)))
                length = int(self.audio_off[i + 1] - self.audio_off[i])
                if length < samples:
                    continue
                t0 = int(self.audio_off[i]) + hop * int(rng.integers((length - samples) // hop + 1))
                x = self.audio[stems[int(rng.integers(len(stems)))]][t0 : t0 + samples]
                out[k] = x
                if float(np.abs(x).max()) > 1e-3:
                    break
        return out


def _draw(rng: np.random.Generator, world: WorldConfig) -> tuple[Identity, Script]:
    words = sample_sentence(rng, world.min_words, world.max_words)
    script = sample_script(rng, words, world.max_events, world.event_prob)
    return sample_identity(rng), script


def build_cache(out: Path, counts: dict[str, int], seed: int = 0) -> None:
    """Render ``counts[split]`` clips per split into ``out`` (skips splits already there)."""
    out.mkdir(parents=True, exist_ok=True)
    world = WorldConfig()
    rng = np.random.default_rng(seed)
    seen_ids: set[str] = set()
    seen_sent: set[str] = set()
    for split in SPLITS:
        n = counts.get(split, 0)
        path = out / f"{split}.npz"
        frames: list[np.ndarray] = []
        stems: dict[str, list[np.ndarray]] = {"speech": [], "sfx": [], "mix": []}
        meta: list[dict[str, Any]] = []
        bar = tqdm(total=n, desc=f"synth {split}", disable=path.exists())
        while len(meta) < n:
            identity, script = _draw(rng, world)
            ik, sk = identity_key(identity), script.sentence_key()
            if split != "train" and (ik in seen_ids or sk in seen_sent):
                continue  # held out: neither the face nor the sentence was trained on
            seen_ids.add(ik)
            seen_sent.add(sk)
            spec = sample_spec(
                rng,
                world,
                clip_id=f"{split}-{len(meta):05d}",
                identity=identity,
                script=script,
            )
            if path.exists():  # keep the draws (and held-out sets) identical, skip the render
                meta.append({})
                continue
            clip = make_clip(spec, world)
            frames.append(clip.frames)
            stems["speech"].append(clip.speech)
            stems["sfx"].append(clip.sfx)
            stems["mix"].append(clip.mix)
            meta.append(
                {
                    "clip_id": spec.clip_id,
                    "sentence": clip.spec.script.sentence(),
                    "transcript": clip.transcript,
                    "voice": spec.voice,
                    "identity": identity.to_json(),  # where its eyes and mouth are
                }
            )
            bar.update()
        bar.close()
        if path.exists():
            continue
        f_off = np.cumsum([0] + [len(f) for f in frames])
        a_off = np.cumsum([0] + [len(a) for a in stems["speech"]])
        arrays = {k: np.concatenate(v) for k, v in stems.items()}
        arrays |= {"frames": np.concatenate(frames), "frame_off": f_off, "audio_off": a_off}
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds poorly
        (out / f"{split}.json").write_text(json.dumps(meta, indent=0))
        log.info("cached %d %s clips (%d frames, %.1f s audio) in %s", n, split, f_off[-1],
                 a_off[-1] / world.sample_rate, path)  # fmt: skip


def load_split(root: Path, split: str) -> ClipStore:
    """Load one cached split into memory."""
    z = np.load(root / f"{split}.npz")
    return ClipStore(
        frames=z["frames"],
        frame_off=z["frame_off"],
        audio={k: z[k] for k in ("speech", "sfx", "mix")},
        audio_off=z["audio_off"],
        meta=json.loads((root / f"{split}.json").read_text()),
    )
