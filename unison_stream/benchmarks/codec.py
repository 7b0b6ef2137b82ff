"""``unison-stream bench codec``: quality and speed of the bundled codecs on held-out clips.

Quality is measured on the test split of the codec cache (identities and sentences never
trained on), decoding *chunk by chunk* as the engine does (one model chunk at a time):

- video: PSNR, SSIM and ``video_sharpness_ratio`` (gradient energy of the reconstructions ÷ the
  originals', as eval's ``sharpness_ratio_frame``) of the uint8 frames the viewer gets;
- audio (speech and SFX stems): multi-resolution STFT distance, log-mel L1, SI-SDR;
- intelligibility: closed-set sentence identification with pocketsphinx on reconstructed speech
  vs on the original speech (``audio_sentence_id_ratio`` = reconstructed / original);
- effects: ``audio_effect_recall`` — the share of effect onsets (found in the original SFX
  stem) that the evaluation's detector (:func:`unison_stream.eval.sfx.audio_onset`) still
  finds in reconstructed speech + reconstructed SFX mixed at −3 dB as the engine mixes them;
  ``audio_effect_recall_original`` is the same on the original stems. A codec that smears
  attacks or loses tonal effects caps the model's ``sfx_recall`` at this figure.

Speed is media seconds decoded per wall second (``x_realtime``), with 2 threads and with 1
(the engine shares the CPU with the model), next to the preview decoders measured in the same
process as the baseline (``*_vs_preview``: how many times slower the trained codec is), and the
host they were measured on (``runtime.host_info``: CPU model, ISA in use, threads).

``--video-weights PATH`` measures a candidate video codec (a ``video.safetensors`` written by
``weights.export``, e.g. a fine-tuned decoder) in place of the bundled one; ``--video-only``
leaves out audio, intelligibility, effects and speed (a decoder's quality alone, quickly).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unison_stream.codecs import metrics, weights
from unison_stream.codecs.audio import AudioAE, StreamingAudioDecoder
from unison_stream.codecs.data import CACHE_COUNTS, build_cache, load_split
from unison_stream.codecs.preview import PreviewAudioDecoder, PreviewVideoDecoder
from unison_stream.codecs.video import StreamingVideoDecoder, VideoAE
from unison_stream.config import UnisonConfig, load_config
from unison_stream.data.synth.measure import mouth_opening
from unison_stream.imaging import gradient_energy
from unison_stream.runtime import host_info

__all__ = ["register", "run_bench"]

log = logging.getLogger(__name__)


def _chunks(z: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [z[:, i : i + size] for i in range(0, z.shape[1], size)]


def _x_realtime(decode: Any, chunks: list[torch.Tensor], seconds: float, threads: int) -> float:
    """Media seconds per wall second decoding ``chunks`` in order (best of 3 passes)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = float("inf")
    try:
        for _ in range(3):
            decode.reset()
            t0 = time.perf_counter()
            for c in chunks:
                decode.decode(c)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return seconds / best


@torch.inference_mode()
def run_bench(cfg: UnisonConfig, *, data_dir: Path, clips: int, weights_dir: Path | None = None,
              video_weights: Path | None = None, video_only: bool = False
              ) -> dict[str, Any]:  # fmt: skip
    """All codec figures as a flat dict (see the module docstring); ``video_weights`` (a
    ``video.safetensors``) replaces the video codec of ``weights_dir``, ``video_only`` stops
    after the video quality figures."""
    from unison_stream.codecs.sentence_id import SentenceIdentifier

    if not (data_dir / "test.npz").exists():
        build_cache(data_dir, CACHE_COUNTS)
    test = load_split(data_dir, "test")
    n = min(clips, len(test))
    out: dict[str, Any] = {"clips": n, **host_info()}  # decode speed is the host's
    video_root = weights_dir
    if video_weights is not None:  # weights.load reads <root>/video.safetensors
        if video_weights != weights.weights_path("video", video_weights.parent):
            raise SystemExit(f"--video-weights: a video.safetensors, not {video_weights}")
        if not video_weights.exists():
            raise SystemExit(f"--video-weights: no file {video_weights}")
        video_root = video_weights.parent
        out["video_weights"] = str(video_weights)
    vae = weights.load("video", cfg.latent, cfg.media, video_root)
    if video_weights is not None and vae is None:
        raise SystemExit(f"--video-weights: {video_weights} does not fit the latent config")
    aae = weights.load("audio", cfg.latent, cfg.media, weights_dir)
    out["video_trained"], out["audio_trained"] = vae is not None, aae is not None
    if vae is None:
        log.warning("no bundled video weights: measuring an untrained codec")
        vae = weights.build("video", weights.default_codec_cfg("video"), cfg.latent, cfg.media)
    if aae is None:
        log.warning("no bundled audio weights: measuring an untrained codec")
        aae = weights.build("audio", weights.default_codec_cfg("audio"), cfg.latent, cfg.media)
    assert isinstance(vae, VideoAE) and isinstance(aae, AudioAE)
    vae.eval()
    aae.eval()
    chunk_v = cfg.stream.chunk_latent_frames
    chunk_a = cfg.audio_frames_per_chunk()
    s = cfg.latent.video_time_stride

    # ---- video quality ------------------------------------------------------------------------
    vdec = StreamingVideoDecoder(vae)
    ps, ss, lat_v, e_dec, e_gt, spread = [], [], [], [], [], []
    for i in range(n):
        fr = test.clip_frames(i)
        fr = fr[: len(fr) // s * s]
        z = vae.encode(torch.from_numpy(fr)[None])  # (1, F, C, h, w)
        vdec.set_reference(fr[0])  # the engine's decoder reads its session's picture
        vdec.reset()
        y = np.concatenate([vdec.decode(c) for c in _chunks(z, chunk_v)], 1)[0]
        a, b = torch.from_numpy(y).float() / 255, torch.from_numpy(fr).float() / 255
        ps.append(float(metrics.psnr(a, b).mean()))
        ss.append(float(metrics.ssim(a, b).mean()))
        e_dec.append(gradient_energy(y))
        e_gt.append(gradient_energy(fr))
        spread.append((float(np.std(mouth_opening(y))), float(np.std(mouth_opening(fr)))))
        lat_v.append(z)
    out["video_psnr"] = float(np.mean(ps))
    out["video_ssim"] = float(np.mean(ss))
    # gradient energy of reconstructions ÷ originals (eval's sharpness_ratio, whole frame)
    out["video_sharpness_ratio"] = float(np.concatenate(e_dec).mean() / np.concatenate(e_gt).mean())
    # the mouth's spread (std of the measured opening) after a round trip ÷ the original's: the
    # ceiling of the eval's mouth_spread_ratio for any model that speaks through this codec
    dec_spread, gt_spread = np.mean(spread, axis=0)
    out["video_mouth_spread_ratio"] = float(dec_spread / gt_spread)
    if video_only:
        return out

    # ---- audio quality ------------------------------------------------------------------------
    adec = StreamingAudioDecoder(aae)
    hop = aae.hop
    recon_speech: list[np.ndarray] = []
    recon_sfx: list[np.ndarray] = []
    res: dict[str, dict[str, list[float]]] = {}
    lat_a = []
    for i in range(n):
        for stem in ("speech", "sfx"):
            x = test.clip_audio(i, stem)
            x = x[: len(x) // hop * hop]
            z = aae.encode(torch.from_numpy(x)[None])  # (1, N, Ca)
            adec.reset()
            y = np.concatenate([adec.decode(c) for c in _chunks(z, chunk_a)], 1)
            yt, xt = torch.from_numpy(y), torch.from_numpy(x)[None]
            r = res.setdefault(stem, {"mr_stft": [], "mel_l1": [], "si_sdr": []})
            r["mr_stft"].append(float(metrics.mr_stft(yt, xt)))
            r["mel_l1"].append(float(metrics.mel_l1(yt, xt)))
            r["si_sdr"].append(float(metrics.si_sdr(yt, xt).mean()))
            if stem == "speech":
                recon_speech.append(y[0])
                lat_a.append(z)
            else:
                recon_sfx.append(y[0])
    for stem, r in res.items():
        for k, v in r.items():
            out[f"audio_{stem}_{k}"] = float(np.mean(v))
    for k in ("mr_stft", "mel_l1", "si_sdr"):
        out[f"audio_{k}"] = float(np.mean([res[st][k] for st in res]))

    # ---- intelligibility ----------------------------------------------------------------------
    sid = SentenceIdentifier([m["sentence"] for m in test.meta[:n]])
    truth = list(range(n))
    acc_orig = sid.accuracy([test.clip_audio(i, "speech") for i in range(n)], truth)
    acc_rec = sid.accuracy(recon_speech, truth)
    out["audio_sentence_id_original"] = acc_orig
    out["audio_sentence_id_reconstructed"] = acc_rec
    out["audio_sentence_id_ratio"] = acc_rec / acc_orig if acc_orig > 0 else 0.0

    # ---- effects ------------------------------------------------------------------------------
    from unison_stream.eval.sfx import audio_onset

    sr = cfg.media.sample_rate
    gain = 10 ** (-3 / 20)  # the engine's SFX stem gain (engine.audio.Mixer)
    found: dict[str, list[bool]] = {"original": [], "reconstructed": []}
    onsets = test.effect_onsets()
    for i in range(n):
        a0, a1 = int(test.audio_off[i]), int(test.audio_off[i + 1])
        mixes = {
            "original": test.clip_audio(i, "speech") + gain * test.clip_audio(i, "sfx"),
            "reconstructed": recon_speech[i] + gain * recon_sfx[i],
        }
        for t in onsets[(onsets >= a0) & (onsets < a1 - sr // 10)]:
            for name, mix in mixes.items():
                found[name].append(not np.isnan(audio_onset(mix, sr, (t - a0) / sr)))
    out["audio_effects"] = len(found["original"])
    for name, key in (
        ("reconstructed", "audio_effect_recall"),
        ("original", "audio_effect_recall_original"),
    ):
        out[key] = float(np.mean(found[name])) if found[name] else 0.0

    # ---- speed --------------------------------------------------------------------------------
    zv = torch.cat(lat_v[:4], 1)  # one long stream of latents, (1, F, C, h, w)
    zv_chunks = _chunks(zv, chunk_v)
    secs_v = zv.shape[1] * s / cfg.media.fps
    za = torch.cat(lat_a[:4], 1)
    za_chunks = _chunks(za, chunk_a)
    secs_a = za.shape[1] / cfg.latent.audio_hz
    prev_v, prev_a = PreviewVideoDecoder(cfg), PreviewAudioDecoder(cfg)
    for th in (2, 1):
        out[f"video_decode_x_realtime_{th}t"] = _x_realtime(vdec, zv_chunks, secs_v, th)
        out[f"audio_decode_x_realtime_{th}t"] = _x_realtime(adec, za_chunks, secs_a, th)
        pv = _x_realtime(prev_v, zv_chunks, secs_v, th)
        pa = _x_realtime(prev_a, za_chunks, secs_a, th)
        out[f"video_decode_vs_preview_{th}t"] = pv / out[f"video_decode_x_realtime_{th}t"]
        out[f"audio_decode_vs_preview_{th}t"] = pa / out[f"audio_decode_x_realtime_{th}t"]
    out["video_decode_x_realtime"] = out["video_decode_x_realtime_2t"]
    out["audio_decode_x_realtime"] = out["audio_decode_x_realtime_2t"]
    out["weights_mb"] = sum(
        weights.weights_path(k, weights_dir).stat().st_size / 1e6
        for k in ("video", "audio")
        if weights.weights_path(k, weights_dir).exists()
    )
    return out


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.preset, args.overrides)
    video_weights = Path(args.video_weights) if args.video_weights else None
    res = run_bench(cfg, data_dir=Path(args.data_dir), clips=args.clips,
                    video_weights=video_weights, video_only=args.video_only)  # fmt: skip
    if args.json:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))
    else:
        for k, v in res.items():
            log.info("%-36s %s", k, f"{v:.4f}" if isinstance(v, float) else v)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("codec", help="codec quality (held-out clips) and decode speed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--clips", type=int, default=40, help="test clips to measure")
    p.add_argument("--data-dir", default="data/codec", help="codec clip cache (built if missing)")
    p.add_argument(
        "--video-weights",
        default="",
        help="a candidate video.safetensors to measure instead of the bundled one",
    )
    p.add_argument(
        "--video-only",
        action="store_true",
        help="video quality only: no audio, intelligibility, effects or speed",
    )
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    p.set_defaults(func=_run)
