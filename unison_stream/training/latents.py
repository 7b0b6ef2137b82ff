"""Latent datasets: encode a manifest's clips once with the codecs, then sample training windows.

``prepare_latents`` (``unison-stream train prepare``) reads a manifest (synthetic or real, the
loader of ``unison_stream.data``), encodes video frames and the speech and SFX stems with the
bundled codecs, embeds caption and transcript with MiniLM, and writes one safetensors file per
split holding every clip back to back (offsets in the metadata) plus per-channel latent
statistics of the train split (the model's latent normalisation).

``LatentShardSource`` draws training sequences from it: a reference chunk (the clip's first
latent frame repeated, silent audio) followed by ``chunks − 1`` chunks cut from a random,
chunk-aligned position of a clip; track times are moved so the window starts at chunk 1.
With probability ``event_prob`` a sequence is instead cut around a random sound event of the
split (the event's chunk placed uniformly among the window's chunks): effects are sparse (about
one per clip), so uniform windows show one to about a fifth of the sequences.

Two conditionings serving gives and the world does not are trained in too. Each clip also
stores the **heard track**: the speech front end's viseme track read off its speech stem, what
the audio-driven mode is conditioned on when an agent's own voice drives the avatar (the
trainer puts it in place of the true track in a share of the audio-driven rows). And a share of
sequences (``generic_caption_prob``) sees the engine's **generic caption** instead of the clip's
own, because a session opened without a caption runs on it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from unison_stream.config import UnisonConfig
from unison_stream.model.conditioning import Conditioning, TimedTrack
from unison_stream.model.dit import patchify
from unison_stream.training.batch import TrainBatch
from unison_stream.vocab import FIRST_EVENT_ID

__all__ = ["LatentShardSource", "latent_stats", "prepare_latents"]

log = logging.getLogger(__name__)


def prepare_latents(
    manifest: Path,
    out: Path,
    cfg: UnisonConfig,
    *,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, int]:
    """Encode every clip of ``manifest`` into ``out/<split>.safetensors``; clips per split."""
    from unison_stream.codecs import load_encoders, silence_latent
    from unison_stream.data.loader import ManifestDataset
    from unison_stream.engine.speech_frontend import SpeechFrontEnd
    from unison_stream.model.text import TextEncoder

    venc, aenc = load_encoders(cfg)
    text = TextEncoder.shared()
    frontend = SpeechFrontEnd.load()
    stride = cfg.latent.video_time_stride
    per_v = round(cfg.latent.audio_hz / cfg.video_latent_fps())  # audio latents per video latent
    hop = round(cfg.media.sample_rate / cfg.latent.audio_hz)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split in splits:
        ds = ManifestDataset(manifest, split=split, media=cfg.media)
        if len(ds) == 0:
            continue
        videos, audios, mixes, tracks, heards, meta = [], [], [], [], [], []
        cap_tok, cap_mask, cap_pool, tr_pool = [], [], [], []
        for i in tqdm(range(len(ds)), desc=f"encode {split}", file=sys.stderr):
            s = ds[i]
            f = (len(s.frames) // stride) * stride
            if f < stride * cfg.stream.chunk_latent_frames:
                continue
            with torch.inference_mode():
                venc.reset()
                lv = venc.encode(s.frames[None, :f])[0]  # (Fv, C, h, w)
                n = lv.shape[0] * per_v
                stems = [s.stems.get("speech", s.audio), s.stems.get("sfx", np.zeros_like(s.audio))]
                la = []
                for w in [*stems, s.audio]:  # speech, SFX, and their mix (one-stream ablation)
                    aenc.reset()
                    la.append(
                        aenc.encode(np.asarray(w[: n * hop], np.float32)[None])[0][:n]
                    )  # (N, Ca)
            videos.append(lv.float())
            audios.append(torch.stack(la[:2], dim=1).float())  # (N, 2, Ca)
            mixes.append(la[2][:, None].float())  # (N, 1, Ca)
            tracks.append(
                torch.cat(
                    (
                        torch.from_numpy(s.track_ids).float()[:, None],
                        torch.from_numpy(s.track_times),
                    ),
                    dim=1,
                )
            )  # (L, 3): id, start, end
            speech = np.asarray(s.stems.get("speech", s.audio), np.float32)
            heard = frontend.track(speech, cfg.media.sample_rate) if frontend else TimedTrack()
            heards.append(_track_rows(heard))  # (L', 3)
            emb = text.encode([s.caption, s.transcript])
            cap_tok.append(emb.tokens[0])
            cap_mask.append(emb.mask[0])
            cap_pool.append(emb.pooled[0])
            tr_pool.append(emb.pooled[1])
            meta.append(
                {
                    "id": s.id,
                    "frames": int(lv.shape[0]),
                    "track": len(s.track_ids),
                    "heard": len(heard),
                    "caption": s.caption,
                }
            )
        tensors = {
            "video": torch.cat(videos),
            "audio": torch.cat(audios),
            "audio_mix": torch.cat(mixes),
            "track": torch.cat(tracks) if tracks else torch.zeros(0, 3),
            "heard": torch.cat(heards) if heards else torch.zeros(0, 3),
            "caption_tokens": torch.stack(cap_tok),
            "caption_mask": torch.stack(cap_mask),
            "caption_pooled": torch.stack(cap_pool),
            "transcript_pooled": torch.stack(tr_pool),
        }
        if split == "train":
            tensors.update(latent_stats(tensors["video"], tensors["audio"]))
            mix = latent_stats(tensors["video"], tensors["audio_mix"])
            tensors.update(mix_audio_shift=mix["audio_shift"], mix_audio_scale=mix["audio_scale"])
            tensors["silence"] = silence_latent(aenc, cfg)  # the reference chunk's audio
        save_file(tensors, str(out / f"{split}.safetensors"), metadata={"clips": json.dumps(meta)})
        counts[split] = len(meta)
        log.info("%s: %d clips, %d latent frames", split, len(meta), int(tensors["video"].shape[0]))
    return counts


def _track_rows(track: TimedTrack) -> Tensor:
    """A timed track as (L, 3) rows: id, start, end."""
    return torch.tensor(
        [[float(i), a, b] for i, a, b in zip(track.ids, track.start, track.end, strict=True)]
    ).reshape(-1, 3)


def _window(rows: Tensor, a: float, b: float, shift: float) -> TimedTrack:
    """The spans of ``rows`` (L, 3) that overlap [a, b), times moved by ``shift``."""
    rows = rows[(rows[:, 2] > a) & (rows[:, 1] < b)]
    return TimedTrack(
        tuple(int(x) for x in rows[:, 0]),
        tuple(float(x) + shift for x in rows[:, 1]),
        tuple(float(x) + shift for x in rows[:, 2]),
    )


def latent_stats(video: Tensor, audio: Tensor) -> dict[str, Tensor]:
    """Per-channel mean and std: video (F, C, h, w), audio (N, S, Ca) → the model's buffers."""
    return {
        "video_shift": video.mean(dim=(0, 2, 3)),
        "video_scale": video.std(dim=(0, 2, 3)).clamp_min(1e-3),
        "audio_shift": audio.mean(dim=(0, 1)),
        "audio_scale": audio.std(dim=(0, 1)).clamp_min(1e-3),
    }


class LatentShardSource:
    """Training windows from a prepared split (all in memory: tens of MB for the tiny world)."""

    def __init__(
        self,
        root: Path,
        cfg: UnisonConfig,
        *,
        batch: int,
        chunks: int,
        seed: int = 0,
        split: str = "train",
        event_prob: float = 0.0,
        generic_caption_prob: float = 0.0,
        generic_captions: tuple[str, str] = ("", ""),  # (default, listening)
    ) -> None:
        path = root / f"{split}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no prepared latents (run `unison-stream train prepare`)"
            )
        self.cfg, self.batch, self.chunks = cfg, batch, chunks
        self.t = load_file(str(path))
        self.mixed = cfg.audio_streams() == 1  # the one-stream ablation trains on the mix
        if self.mixed:
            if "audio_mix" not in self.t:
                raise ValueError(f"{path}: no mixed-audio latents; re-run `train prepare`")
            self.t["audio"] = self.t["audio_mix"]
        with safe_open(str(path), framework="pt") as f:
            self.clips = json.loads((f.metadata() or {})["clips"])
        per_v = round(cfg.latent.audio_hz / cfg.video_latent_fps())
        # prepared before the heard track existed: no heard tracks, no caption texts
        self.has_heard = "heard" in self.t and all("heard" in c for c in self.clips)
        h_off = np.cumsum([0] + [c.get("heard", 0) for c in self.clips])
        self.heard_rows = [(int(h_off[i]), int(h_off[i + 1])) for i in range(len(self.clips))]
        self.generic_p = generic_caption_prob
        self.generic = None
        if generic_caption_prob > 0:
            from unison_stream.model.text import TextEncoder

            self.generic = TextEncoder.shared().encode(list(generic_captions))
        v_off = np.cumsum([0] + [c["frames"] for c in self.clips])
        t_off = np.cumsum([0] + [c["track"] for c in self.clips])
        fc = cfg.stream.chunk_latent_frames
        need = (chunks - 1) * fc
        self.items = [
            (int(v_off[i]), int(v_off[i + 1]), int(t_off[i]), int(t_off[i + 1]), i)
            for i in range(len(self.clips))
            if v_off[i + 1] - v_off[i] >= need
        ]
        if not self.items:
            raise ValueError(f"{path}: no clip holds {chunks - 1} chunks")
        self.per_v = per_v
        # (item index, event start in clip seconds) for every sound event of a usable clip that
        # starts inside its whole chunks
        track, cs = self.t["track"], cfg.chunk_seconds()
        self.events = [
            (j, float(track[r, 1]))
            for j, (v0, v1, t0, t1, _) in enumerate(self.items)
            for r in range(t0, t1)
            if int(track[r, 0]) >= FIRST_EVENT_ID
            and float(track[r, 1]) + 1e-4 < (v1 - v0) // fc * cs
        ]
        self.event_prob = event_prob if self.events else 0.0
        self.g = torch.Generator().manual_seed(seed)
        stats = root / "train.safetensors"
        train = load_file(str(stats))
        self.stats = {
            k: v
            for k, v in train.items()
            if k.endswith(("_shift", "_scale")) and not k.startswith("mix_")
        }
        if self.mixed:
            self.stats.update(
                audio_shift=train["mix_audio_shift"], audio_scale=train["mix_audio_scale"]
            )
        self.silence = train["silence"]  # (Ca,) latent of a silent frame

    def state(self) -> dict[str, Tensor]:
        return {"rng": self.g.get_state()}

    def restore(self, state: dict[str, Tensor]) -> None:
        self.g.set_state(state["rng"])

    def next_batch(self) -> TrainBatch:
        cfg, g = self.cfg, self.g
        fc, nc, cs = (
            cfg.stream.chunk_latent_frames,
            cfg.audio_frames_per_chunk(),
            cfg.chunk_seconds(),
        )
        k = self.chunks
        videos, audios, tracks, heards, idents, rows, generic = [], [], [], [], [], [], []
        for _ in range(self.batch):
            around = self.event_prob > 0 and float(torch.rand((), generator=g)) < self.event_prob
            if around:
                j, at = self.events[int(torch.randint(len(self.events), (1,), generator=g))]
            else:
                j = int(torch.randint(len(self.items), (1,), generator=g))
            v0, v1, t0, t1, ci = self.items[j]
            n_chunks = (v1 - v0) // fc
            last = n_chunks - (k - 1)  # largest chunk offset of a window
            if around:  # offsets whose window holds the event's chunk
                c = int((at + 1e-4) / cs)  # float32 times: an onset on a boundary starts its chunk
                lo, hi = max(0, c - (k - 2)), min(last, c)
                start = lo + int(torch.randint(hi - lo + 1, (1,), generator=g))
            else:
                start = int(torch.randint(last + 1, (1,), generator=g))  # chunk offset
            clip_v = self.t["video"][v0:v1]  # (F, C, h, w)
            clip_a = self.t["audio"][
                v0 * self.per_v : v1 * self.per_v
            ]  # (N, S, Ca): S = 2 sub-streams, or 1 (the mix)
            ref = clip_v[:1].expand(fc, -1, -1, -1)
            win_v = clip_v[start * fc : (start + k - 1) * fc]
            win_a = clip_a[start * nc : (start + k - 1) * nc]
            silence = self.silence.expand(nc, win_a.shape[1], -1)  # the silent reference chunk
            videos.append(torch.cat((ref, win_v)))
            audios.append(torch.cat((silence, win_a)).permute(1, 0, 2))  # (S, K·Nc, Ca)
            a, b = start * cs, (start + k - 1) * cs
            shift = cs - a  # window start → chunk 1
            tracks.append(_window(self.t["track"][t0:t1], a, b, shift))
            if self.has_heard:
                h0, h1 = self.heard_rows[ci]
                heards.append(_window(self.t["heard"][h0:h1], a, b, shift))
            idents.append(clip_v[0])
            rows.append(ci)
            # -1: the clip's own caption; 0 / 1: the engine's generic (listening) caption
            use = self.generic is not None and float(torch.rand((), generator=g)) < self.generic_p
            listening = "listen" in self.clips[ci].get("caption", "")
            generic.append(int(listening) if use else -1)
        video = torch.stack(videos)  # (B, K·Fc, C, h, w)
        ident = patchify(torch.stack(idents)[:, None], cfg.latent.patch)[:, 0]
        idx = torch.tensor(rows)
        cap_tok = self.t["caption_tokens"][idx].clone()  # (B, Lc, D)
        cap_mask = self.t["caption_mask"][idx].bool()
        cap_pool = self.t["caption_pooled"][idx].clone()
        if self.generic is not None:
            for r, which in enumerate(generic):
                if which >= 0:
                    n = min(cap_tok.shape[1], self.generic.tokens.shape[1])
                    cap_tok[r] = 0
                    cap_tok[r, :n] = self.generic.tokens[which, :n]
                    cap_mask[r] = False
                    cap_mask[r, :n] = self.generic.mask[which, :n]
                    cap_pool[r] = self.generic.pooled[which]
        cond = Conditioning.build(
            caption_tokens=cap_tok,
            caption_mask=cap_mask,
            caption_pooled=cap_pool,
            transcript_pooled=self.t["transcript_pooled"][idx],
            identity=ident,
            tracks=tracks,
        )
        heard = heards if self.has_heard else None
        return TrainBatch(video, torch.stack(audios), cond, heard=heard, tracks=tracks)
