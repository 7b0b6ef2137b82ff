"""Speech → timed viseme track: the causal, streaming front end of the audio-driven mode.

The model is conditioned on a timed phoneme track (:class:`TimedTrack`); with the user's own
TTS audio there is no text, so this front end reads the track off the speech (a small causal
speech → mouth net, speaker invariance from features and many training voices;
``docs/frontend.md``).
The mouth depends on the viseme only, so the net predicts the 15 visemes of
:mod:`unison_stream.data.synth.visemes` and each viseme segment carries one representative
phoneme id (the group's most frequent phoneme in training; ``sil`` → ``SILENCE_ID``).

Pipeline, per 10 ms frame ``t`` (the hop ``[t·hop, (t+1)·hop)`` at 16 kHz):

1. any input rate 8–48 kHz → 16 kHz (:class:`StreamResampler`, bit-exact with the whole call);
2. log-mel of the causal 25 ms window ending at the hop's end, plus its RMS in dBFS;
3. running per-bin normalisation: mean/variance EMAs over frames above the gate, started
   from the training prior (no whole-utterance statistics, so it streams);
4. causal conv front + GRU → viseme logits; the logits for frame ``t`` come out at step
   ``t + lookahead`` (the net has seen ``lookahead`` frames of the future);
5. frames under the energy gate (−40 dBFS) are ``sil``; a new viseme must last
   ``min_segment`` frames to start a segment (its start is then backdated).

Streams run the net in NumPy (:class:`NumpyRunner`, the arithmetic of the torch module the
trainer uses). Exactness: features and the net run on fixed chunks of ``chunk`` frames aligned
to the stream start, so pushing a waveform in any blocks gives bit-for-bit the track of one
whole push.
Threads: :class:`SpeechFrontEnd` is read-only and may serve streams on several threads; one
:class:`FrontEndStream` must be used by one thread at a time (it has no lock).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import erf
from torch import Tensor, nn
from torch.nn import functional as F

from unison_stream.data.synth.visemes import VISEMES
from unison_stream.engine.audio import StreamResampler
from unison_stream.model.conditioning import TimedTrack
from unison_stream.vocab import SILENCE_ID, phoneme_id

__all__ = [
    "FrontEndConfig",
    "FrontEndStream",
    "NumpyRunner",
    "RunningNorm",
    "Segmenter",
    "SpeechFrontEnd",
    "VisemeNet",
    "log_mel",
    "segment",
]

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).parent / "weights" / "frontend.safetensors"


@dataclass(frozen=True)
class FrontEndConfig:
    """Features, net and decoding of the front end (saved as JSON beside the weights)."""

    sample_rate: int = 16000  # the net's rate; inputs of 8–48 kHz are resampled to it
    n_fft: int = 512
    win: int = 400  # 25 ms analysis window
    hop: int = 160  # 10 ms: one label frame
    n_mels: int = 80
    fmin: float = 40.0
    fmax: float = 7600.0  # under the 8 kHz Nyquist, so resampling never leaves an empty band
    norm_prior_frames: int = 50  # the training prior weighs like 0.5 s of speech at the start
    norm_frames: int = 300  # then the EMAs forget with a ~3 s time constant
    conv_channels: int = 96
    conv_kernel: int = 3
    hidden: int = 128
    layers: int = 1
    lookahead: int = 5  # frames: the label of frame t is read at step t + 5 (50 ms)
    chunk: int = 2  # frames per net call; fixed shapes make any push blocking bit-exact
    gate_dbfs: float = -40.0  # quieter frames are silence: the mouth closes, noise can't chatter
    min_segment: int = 3  # frames (30 ms): shorter viseme runs are absorbed by their neighbour
    # one espeak mnemonic per viseme (VISEMES order); the trainer writes the measured ones
    viseme_phonemes: tuple[str, ...] = (
        "_", "m", "f", "D", "t", "k", "S", "s", "n", "r", "aI", "@", "I", "oU", "u:",
    )  # fmt: skip
    min_rate: int = 8000
    max_rate: int = 48000
    extra: dict[str, Any] = field(default_factory=dict)  # notes (training figures) kept as is

    def __post_init__(self) -> None:
        assert len(self.viseme_phonemes) == len(VISEMES), "one phoneme per viseme"
        assert self.win >= self.hop and self.n_fft >= self.win, "hop ≤ window ≤ FFT size"
        assert self.lookahead * self.hop * 1000 // self.sample_rate <= 80, "look-ahead ≤ 80 ms"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> FrontEndConfig:
        d: dict[str, Any] = json.loads(text)
        d["viseme_phonemes"] = tuple(d.get("viseme_phonemes", cls.viseme_phonemes))
        return cls(**d)

    def track_ids(self) -> tuple[int, ...]:
        """Track id of each viseme's representative phoneme (``sil`` → ``SILENCE_ID``)."""
        return tuple(SILENCE_ID if p == "_" else phoneme_id(p) for p in self.viseme_phonemes)


# ---- features ------------------------------------------------------------------------------


def _mel_filterbank(cfg: FrontEndConfig) -> np.ndarray:
    """(M, n_fft/2+1) triangular HTK-mel filters."""

    def mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    lo_mel, hi_mel = mel(np.array([cfg.fmin, cfg.fmax], np.float64))
    pts = 700.0 * (10 ** (np.linspace(lo_mel, hi_mel, cfg.n_mels + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


def log_mel(x: np.ndarray, cfg: FrontEndConfig, fbank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(win − hop + F·hop,) 16 kHz samples → (F, M) log-mel and (F,) window RMS in dBFS.

    Frame f is the window ending at sample ``win − hop + (f+1)·hop`` of ``x``, so the caller
    prepends ``win − hop`` samples of left context (zeros at the stream start).
    """
    n = (len(x) - (cfg.win - cfg.hop)) // cfg.hop
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.win)[:: cfg.hop][:n]  # (F, win)
    frames = frames.astype(np.float64)
    window = np.hanning(cfg.win + 1)[:-1]  # periodic Hann
    spec = np.abs(np.fft.rfft(frames * window, n=cfg.n_fft, axis=-1)) ** 2  # (F, n_fft/2+1)
    mel = spec @ fbank.T / window.sum() ** 2  # (F, M): a sine of amplitude A peaks at A²/4
    rms = np.sqrt(np.mean(frames**2, axis=-1))
    rms_db = 20.0 * np.log10(np.maximum(rms, 1e-10))
    return np.log(mel + 1e-10).astype(np.float32), rms_db.astype(np.float32)


class RunningNorm:
    """Per-bin EMAs of mean and variance over frames above the gate, from a prior."""

    def __init__(self, mean: np.ndarray, var: np.ndarray, cfg: FrontEndConfig) -> None:
        self.mean, self.var = mean.astype(np.float64), var.astype(np.float64)
        self.n = cfg.norm_prior_frames
        self.cap, self.gate = cfg.norm_frames, cfg.gate_dbfs

    def __call__(self, feats: np.ndarray, rms_db: np.ndarray) -> np.ndarray:
        """(F, M) log-mel → (F, M) normalised by the statistics of earlier frames."""
        out = np.empty(feats.shape, np.float32)
        for f in range(len(feats)):
            x = feats[f].astype(np.float64)
            out[f] = (x - self.mean) / np.sqrt(self.var)
            if rms_db[f] >= self.gate:
                self.n = min(self.n + 1, self.cap)
                d = x - self.mean
                self.mean = self.mean + d / self.n
                self.var = self.var + (d * (x - self.mean) - self.var) / self.n
        return out


# ---- the net -------------------------------------------------------------------------------


class VisemeNet(nn.Module):
    """(B, F, M) normalised log-mel → (B, F, V) viseme logits; causal."""

    feat_mean: Tensor  # (M,) the running normaliser's prior, from the training data
    feat_var: Tensor  # (M,)

    def __init__(self, cfg: FrontEndConfig) -> None:
        super().__init__()
        self.cfg = cfg
        m, c, k = cfg.n_mels, cfg.conv_channels, cfg.conv_kernel
        self.register_buffer("feat_mean", torch.zeros(m))
        self.register_buffer("feat_var", torch.ones(m))
        self.conv1 = nn.Conv1d(m, c, k)
        self.conv2 = nn.Conv1d(c, c, k)
        self.gru = nn.GRU(c, cfg.hidden, num_layers=cfg.layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden, len(VISEMES))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, F, M) → logits (B, F, V), from a zero state (streams use NumpyRunner)."""
        k = self.cfg.conv_kernel - 1
        h = F.gelu(self.conv1(F.pad(x.transpose(1, 2), (k, 0))))  # (B, C, F): causal
        h = F.gelu(self.conv2(F.pad(h, (k, 0))))  # (B, C, F)
        y, _ = self.gru(h.transpose(1, 2))  # (B, F, H)
        return self.head(y)  # (B, F, V)

    def flops_per_frame(self) -> int:
        """Multiply-adds × 2 of one frame through the net (features excluded)."""
        cfg = self.cfg
        macs = cfg.n_mels * cfg.conv_channels * cfg.conv_kernel
        macs += cfg.conv_channels**2 * cfg.conv_kernel
        inp = cfg.conv_channels
        for _ in range(cfg.layers):
            macs += 3 * (inp * cfg.hidden + cfg.hidden * cfg.hidden)
            inp = cfg.hidden
        return 2 * (macs + cfg.hidden * len(VISEMES))


class NumpyRunner:
    """:class:`VisemeNet` inference in NumPy, for streams: tiny per-chunk calls cost
    microseconds here, where torch's thread pool costs milliseconds on a busy CPU."""

    def __init__(self, net: VisemeNet) -> None:
        w = {k: v.detach().float().numpy().copy() for k, v in net.state_dict().items()}
        self.cfg, self.w = net.cfg, w
        k, c = net.cfg.conv_kernel, net.cfg.conv_channels
        self.conv = [  # (Cin·K, Cout) with rows ordered (channel, tap) like a window's ravel
            (w[f"conv{i}.weight"].reshape(c, -1).T.copy(), w[f"conv{i}.bias"]) for i in (1, 2)
        ]
        self.k = k

    def initial_state(self) -> list[np.ndarray]:
        cfg, k = self.cfg, self.k - 1
        return [
            np.zeros((cfg.n_mels, k), np.float32),
            np.zeros((cfg.conv_channels, k), np.float32),
            np.zeros((cfg.layers, cfg.hidden), np.float32),
        ]

    def __call__(self, x: np.ndarray, state: list[np.ndarray]) -> np.ndarray:
        """(C, M) features → (C, V) logits; ``state`` is updated in place."""
        h = x.T  # (M, C)
        for i, (w, b) in enumerate(self.conv):
            a = np.concatenate([state[i], h], axis=1)  # (Cin, K−1+C)
            state[i] = a[:, a.shape[1] - (self.k - 1) :]
            win = np.lib.stride_tricks.sliding_window_view(a, self.k, axis=1)  # (Cin, C, K)
            y = win.transpose(1, 0, 2).reshape(win.shape[1], -1) @ w + b  # (C, Cout)
            h = (0.5 * y * (1.0 + erf(y / np.sqrt(2.0)))).T.astype(np.float32)  # exact GELU
        seq = h.T  # (C, Cin)
        for layer in range(self.cfg.layers):
            gi = seq @ self.w[f"gru.weight_ih_l{layer}"].T + self.w[f"gru.bias_ih_l{layer}"]
            whh, bhh = self.w[f"gru.weight_hh_l{layer}"], self.w[f"gru.bias_hh_l{layer}"]
            hid, out = state[2][layer], []
            for t in range(len(seq)):  # (3H,) gates in PyTorch's order r, z, n
                gh = whh @ hid + bhh
                ir, iz, inn = np.split(gi[t], 3)
                hr, hz, hn = np.split(gh, 3)
                r = 1.0 / (1.0 + np.exp(-(ir + hr)))
                z = 1.0 / (1.0 + np.exp(-(iz + hz)))
                hid = ((1.0 - z) * np.tanh(inn + r * hn) + z * hid).astype(np.float32)
                out.append(hid)
            state[2][layer] = hid
            seq = np.stack(out)  # (C, H)
        return seq @ self.w["head.weight"].T + self.w["head.bias"]


# ---- the front end and its streams ---------------------------------------------------------


class SpeechFrontEnd:
    """A trained :class:`VisemeNet` with its config; makes :class:`FrontEndStream` objects."""

    def __init__(self, cfg: FrontEndConfig, net: VisemeNet | None = None) -> None:
        self.cfg = cfg
        self.net = (net or VisemeNet(cfg)).eval()
        self.runner = NumpyRunner(self.net)
        self.fbank = _mel_filterbank(cfg)

    @classmethod
    def load(cls, path: str | Path | None = None) -> SpeechFrontEnd | None:
        """The bundled front end (or ``path``, with its ``.json`` beside); None if absent."""
        from safetensors.torch import load_file

        weights = Path(path) if path is not None else WEIGHTS
        config = weights.with_suffix(".json")
        if not weights.is_file() or not config.is_file():
            log.warning("speech front end: %s (or its .json) is missing; no track", weights)
            return None
        cfg = FrontEndConfig.from_json(config.read_text())
        net = VisemeNet(cfg)
        net.load_state_dict(load_file(str(weights)))
        return cls(cfg, net)

    def stream(self, sample_rate: int) -> FrontEndStream:
        return FrontEndStream(self, sample_rate)

    def track(self, pcm: np.ndarray, sample_rate: int) -> TimedTrack:
        """The track of a whole waveform (the same as a stream pushed in any blocks)."""
        s = self.stream(sample_rate)
        s.push(pcm)
        s.finish()
        return s.track()


class FrontEndStream:
    """One utterance stream: ``push`` float32 mono PCM, read ``track`` up to ``known_s``.

    Not thread-safe: use a stream from one thread at a time.
    """

    def __init__(self, fe: SpeechFrontEnd, sample_rate: int) -> None:
        cfg = fe.cfg
        if not cfg.min_rate <= sample_rate <= cfg.max_rate:
            raise ValueError(f"sample_rate {sample_rate} outside {cfg.min_rate}–{cfg.max_rate}")
        self.fe, self.cfg, self.rate = fe, cfg, sample_rate
        self._rs = StreamResampler(sample_rate, cfg.sample_rate)
        self._x = np.zeros(cfg.win - cfg.hop, np.float32)  # samples not yet framed + context
        self._norm = RunningNorm(fe.net.feat_mean.numpy(), fe.net.feat_var.numpy(), cfg)
        self._state = fe.runner.initial_state()
        self._ids = cfg.track_ids()
        self._gate: list[bool] = []  # per frame: under the energy gate
        self._steps = 0  # net steps run (= frames framed)
        self._n_in = 0  # input samples pushed
        self._n16 = 0  # 16 kHz samples they gave
        self._finished = False
        self._seg = Segmenter(cfg.min_segment)
        self._end_frame: int | None = None  # frames holding input, once finished

    @property
    def known_s(self) -> float:
        """Seconds of media whose track is final (segments ending before never change)."""
        if self._finished:
            return self._n_in / self.rate
        return self._seg.known * self.cfg.hop / self.cfg.sample_rate

    def push(self, pcm: np.ndarray) -> None:
        """Add float32 mono samples at the stream's rate (any block size)."""
        if self._finished:
            raise RuntimeError("FrontEndStream.push after finish()")
        x = np.asarray(pcm, np.float32).reshape(-1)
        self._n_in += x.size
        self._feed(self._rs.push(x))

    def finish(self) -> None:
        """End of input: flush the resampler and the look-ahead; the track is then complete."""
        if self._finished:
            return
        cfg = self.cfg
        self._feed(self._rs.end())
        self._end_frame = -(-self._n16 // cfg.hop)  # frames holding any input
        steps = -(-(self._end_frame + cfg.lookahead) // cfg.chunk) * cfg.chunk  # whole chunks
        pad = (cfg.win - cfg.hop) + (steps - self._steps) * cfg.hop - self._x.size
        self._feed(np.zeros(max(pad, 0), np.float32), count=False)  # zeros past the end
        self._seg.close()
        self._finished = True

    def track(self) -> TimedTrack:
        """All segments so far: closed ones, then the open one up to ``known_s``."""
        sec = self.cfg.hop / self.cfg.sample_rate
        segs = self._seg.segments()
        end_s = self._n_in / self.rate if self._finished else float("inf")
        return TimedTrack(
            tuple(self._ids[v] for v, _, _ in segs),
            tuple(min(a * sec, end_s) for _, a, _ in segs),
            tuple(min(b * sec, end_s) for _, _, b in segs),
        )

    # ---- internals ---------------------------------------------------------------------

    def _feed(self, x16: np.ndarray, *, count: bool = True) -> None:
        """Append 16 kHz samples and run every whole chunk of frames they complete."""
        cfg = self.cfg
        self._n16 += x16.size if count else 0
        self._x = np.concatenate([self._x, x16.astype(np.float32)])
        ctx, size = cfg.win - cfg.hop, cfg.chunk * cfg.hop
        while self._x.size >= ctx + size:
            feats, rms_db = log_mel(self._x[: ctx + size], cfg, self.fe.fbank)  # (C, M), (C,)
            self._x = self._x[size:]
            self._gate += (rms_db < cfg.gate_dbfs).tolist()
            logits = self.fe.runner(self._norm(feats, rms_db), self._state)  # (C, V)
            labels = logits.argmax(-1).tolist()
            for step, v in enumerate(labels, start=self._steps):
                frame = step - cfg.lookahead  # the net's output at step t is frame t − D
                if frame >= 0 and (self._end_frame is None or frame < self._end_frame):
                    self._seg.push(0 if self._gate[frame] else int(v))
            self._steps += cfg.chunk


class Segmenter:
    """Frame visemes → segments ``(viseme, start frame, end frame)``.

    A run of a new viseme must last ``min_segment`` frames to open a segment (which then starts
    where the run started); shorter runs are absorbed by the open segment. Everything before
    :attr:`known` is final.
    """

    def __init__(self, min_segment: int) -> None:
        self.min_segment = min_segment
        self.closed: list[tuple[int, int, int]] = []
        self.cur, self.cur_start = 0, 0  # the open segment: sil from frame 0
        self.pend: tuple[int, int, int] | None = None  # (viseme, start frame, length)
        self.n = 0  # frames pushed

    @property
    def known(self) -> int:
        """Frames whose segmentation is final."""
        return self.pend[1] if self.pend is not None else self.n

    def push(self, v: int) -> None:
        if v == self.cur:
            self.pend = None  # a short run is absorbed by the open segment
        elif self.pend is not None and self.pend[0] == v:
            self.pend = (v, self.pend[1], self.pend[2] + 1)
        else:
            self.pend = (v, self.n, 1)
        if self.pend is not None and self.pend[2] >= self.min_segment:
            start = self.pend[1]
            if start > self.cur_start:
                self.closed.append((self.cur, self.cur_start, start))
            self.cur, self.cur_start, self.pend = v, start, None
        self.n += 1

    def segments(self) -> list[tuple[int, int, int]]:
        """Closed segments, then the open one up to :attr:`known`."""
        tail = [(self.cur, self.cur_start, self.known)] if self.known > self.cur_start else []
        return self.closed + tail

    def close(self) -> None:
        """End of input: an unconfirmed run joins the open segment, which closes."""
        self.pend = None
        if self.n > self.cur_start:
            self.closed.append((self.cur, self.cur_start, self.n))
        self.cur_start = self.n


def segment(visemes: np.ndarray, min_segment: int) -> list[tuple[int, int, int]]:
    """Segments of a whole (F,) viseme sequence (what a stream gives once finished)."""
    seg = Segmenter(min_segment)
    for v in visemes.tolist():
        seg.push(int(v))
    seg.close()
    return seg.closed
