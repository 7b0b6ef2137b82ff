"""Audio autoencoder with an iSTFT vocoder head: 16 kHz waveform ↔ (N, Ca) latents at 25 Hz.

Axes: B batch, S samples, N latent frames (S = N·hop, hop = sample_rate / audio_hz = 640),
J STFT frames (J = N·r, r = hop / stft_hop = 4), D width, Ca latent channels.

- **Encoder** (non-causal, sees the whole input): log-magnitude STFT (``n_fft`` 640, hop 160,
  frames starting at ``j·stft_hop``) → ConvNeXt-1d blocks → a stride-``r`` conv to Ca channels.
- **Decoder** (causal, Vocos-style): per-latent linear to ``r_dec`` frames of width D → causal
  ConvNeXt blocks (depthwise conv padded on the left only) → linear to log-magnitude and phase
  of ``dec_n_fft/2+1`` bins → inverse FFT per frame → windowed overlap-add. The decoder's STFT
  (``dec_n_fft``, ``dec_stft_hop``) may be shorter than the encoder's: a shorter window
  spreads an attack over fewer ms before it.
- **Streaming**: each depthwise conv keeps its last ``kernel − 1`` inputs, and the overlap-add
  keeps the ``dec_n_fft − dec_stft_hop`` samples still open. Decoding chunk by chunk
  therefore gives the same samples as decoding at once, and chunk joins carry no seam
  (tested). A latent frame ``n`` decodes to samples ``[n·hop, (n+1)·hop)`` with no look-ahead.

One codec serves speech and effects (trained on speech, SFX and mix stems alike).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unison_stream.codecs.config import AudioCodecConfig
from unison_stream.config import LatentConfig, MediaConfig

__all__ = ["AudioAE", "AudioEncoderStream", "StreamingAudioDecoder"]

_LOG_EPS = 1e-5


class _ConvNeXt(nn.Module):
    """Depthwise conv → LayerNorm → pointwise MLP → layer scale, residual; (B, D, J) in and out.

    ``causal`` pads the depthwise conv on the left only; the caller may pass the previous
    ``kernel − 1`` inputs as ``state`` (streaming) instead of zeros.
    """

    def __init__(self, dim: int, kernel: int, mlp_ratio: int, causal: bool) -> None:
        super().__init__()
        self.kernel, self.causal = kernel, causal
        self.dw = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D, J) [+ (B, D, k−1) state] → (B, D, J), new state (B, D, k−1)."""
        p = self.kernel - 1
        if self.causal:
            if state is None:
                state = x.new_zeros(x.shape[0], x.shape[1], p)
            xp = torch.cat([state, x], 2)  # (B, D, k−1+J)
            new_state = xp[:, :, xp.shape[2] - p :]
        else:
            xp = F.pad(x, (p // 2, p - p // 2))
            new_state = x.new_zeros(0)
        h = self.dw(xp).transpose(1, 2)  # (B, J, D)
        h = self.fc2(F.gelu(self.fc1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2), new_state


class AudioAE(nn.Module):
    """Waveform ↔ latents; see the module docstring."""

    window: torch.Tensor  # (n_fft,) periodic Hann of the encoder's analysis
    ola_gain: torch.Tensor  # () kept for old weight files; the decoder uses dec_ola_gain
    dec_window: torch.Tensor  # (dec_n_fft,) periodic Hann of the decoder's synthesis
    dec_ola_gain: torch.Tensor  # () steady-state Σ dec_window² per sample
    latent_mean: torch.Tensor  # (Ca,) buffers: raw latent statistics measured after training
    latent_std: torch.Tensor

    def __init__(self, cfg: AudioCodecConfig, latent: LatentConfig, media: MediaConfig) -> None:
        super().__init__()
        self.cfg, self.latent = cfg, latent
        hop = media.sample_rate / latent.audio_hz
        assert abs(hop - round(hop)) < 1e-9, "sample_rate / audio_hz must be a whole number"
        self.hop = round(hop)
        assert self.hop % cfg.stft_hop == 0, f"latent hop {self.hop} must be k·stft_hop"
        assert cfg.n_fft % cfg.stft_hop == 0, "n_fft must be a multiple of stft_hop (OLA blocks)"
        self.r = self.hop // cfg.stft_hop  # STFT frames per latent frame (encoder)
        self.dec_n_fft = cfg.dec_n_fft or cfg.n_fft
        self.dec_hop = cfg.dec_stft_hop or cfg.stft_hop
        assert self.hop % self.dec_hop == 0, f"latent hop {self.hop} must be k·dec_stft_hop"
        assert self.dec_n_fft % self.dec_hop == 0, "dec_n_fft must be a multiple of its hop"
        self.r_dec = self.hop // self.dec_hop  # decoder frames per latent frame
        bins, d, ca = cfg.n_fft // 2 + 1, cfg.width, latent.audio_channels
        dec_bins = self.dec_n_fft // 2 + 1
        # ---- encoder ---------------------------------------------------------------------
        self.enc_in = nn.Conv1d(bins, d, 1)
        self.enc_blocks = nn.ModuleList(
            [_ConvNeXt(d, cfg.kernel, cfg.mlp_ratio, causal=False) for _ in range(cfg.enc_blocks)]
        )
        self.enc_norm = nn.LayerNorm(d)
        self.enc_out = nn.Conv1d(d, ca, self.r, stride=self.r)
        # ---- decoder ---------------------------------------------------------------------
        self.dec_in = nn.Linear(ca, d * self.r_dec)
        self.dec_blocks = nn.ModuleList(
            [_ConvNeXt(d, cfg.kernel, cfg.mlp_ratio, causal=True) for _ in range(cfg.dec_blocks)]
        )
        self.dec_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 2 * dec_bins)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True))
        wsq = self.window.square().view(-1, cfg.stft_hop).sum(0)
        self.register_buffer("ola_gain", wsq.mean())
        dec_window = torch.hann_window(self.dec_n_fft, periodic=True)
        self.register_buffer("dec_window", dec_window, persistent=False)
        # steady-state OLA gain of the squared window (Hann at hop n_fft/4: 1.5)
        dec_wsq = dec_window.square().view(-1, self.dec_hop).sum(0)
        self.register_buffer("dec_ola_gain", dec_wsq.mean(), persistent=False)
        self.register_buffer("latent_mean", torch.zeros(ca))
        self.register_buffer("latent_std", torch.ones(ca))

    # ---- encoder -----------------------------------------------------------------------------
    def stft_logmag(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) → (B, bins, J) log-magnitude, frame j = samples [j·stft_hop, j·stft_hop+n_fft)."""
        c = self.cfg
        x = F.pad(wave, (0, c.n_fft - c.stft_hop))  # S + n_fft − hop → exactly S / stft_hop frames
        spec = torch.stft(
            x, c.n_fft, c.stft_hop, window=self.window, center=False, return_complex=True
        )
        return torch.log(spec.abs() + _LOG_EPS)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) float waveform, S = N·hop → (B, N, Ca) normalised latents."""
        assert wave.shape[-1] % self.hop == 0, f"length must be a multiple of hop={self.hop}"
        h = self.enc_in(self.stft_logmag(wave))  # (B, D, J)
        for blk in self.enc_blocks:
            h, _ = blk(h)
        h = self.enc_norm(h.transpose(1, 2)).transpose(1, 2)
        z = self.enc_out(h).transpose(1, 2)  # (B, N, Ca)
        return (z - self.latent_mean) / self.latent_std

    # ---- decoder -----------------------------------------------------------------------------
    def decode_frames(
        self, z: torch.Tensor, states: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, N, Ca) normalised latents → windowed time frames (B, J, dec_n_fft), new conv
        states (J = N·r_dec)."""
        b, n, _ = z.shape
        z = z * self.latent_std + self.latent_mean
        h = self.dec_in(z).view(b, n, self.r_dec, -1).flatten(1, 2).transpose(1, 2)  # (B, D, J)
        new_states: list[torch.Tensor] = []
        for i, blk in enumerate(self.dec_blocks):
            h, st = blk(h, None if states is None else states[i])
            new_states.append(st)
        h = self.head(self.dec_norm(h.transpose(1, 2)))  # (B, J, 2·dec_bins)
        logmag, phase = h.chunk(2, -1)
        mag = torch.exp(logmag.clamp(max=6.0))
        spec = torch.polar(mag, phase)  # (B, J, bins) complex
        frames = torch.fft.irfft(spec, n=self.dec_n_fft) * self.dec_window  # (B, J, dec_n_fft)
        return frames, new_states

    def overlap_add(
        self, frames: torch.Tensor, tail: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, J, dec_n_fft) frames [+ (B, dec_n_fft − dec_hop) open samples] → (B, J·dec_hop)
        finished samples and the new open tail."""
        b, j, n_fft = frames.shape
        hop = self.dec_hop
        q = n_fft // hop  # sub-blocks per frame
        blocks = frames.view(b, j, q, hop)
        out = frames.new_zeros(b, j + q - 1, hop)
        for k in range(q):  # frame i's k-th sub-block lands on output block i + k
            out[:, k : k + j] += blocks[:, :, k]
        out = out.flatten(1) / self.dec_ola_gain  # (B, (J+q−1)·hop)
        if tail is not None:
            out[:, : tail.shape[1]] += tail
        return out[:, : j * hop], out[:, j * hop :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, Ca) → (B, N·hop) waveform (a whole stream from silence)."""
        frames, _ = self.decode_frames(z)
        wave, _ = self.overlap_add(frames, None)
        return wave

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(wave)
        return self.decode(z), z


class StreamingAudioDecoder:
    """The :class:`~unison_stream.codecs.AudioDecoder` protocol over a trained :class:`AudioAE`.

    Carries each causal conv's last inputs and the open overlap-add tail per stream.
    """

    def __init__(self, ae: AudioAE) -> None:
        self.ae = ae.eval()
        self.states: list[torch.Tensor] | None = None
        self.tail: torch.Tensor | None = None

    def reset(self) -> None:
        self.states, self.tail = None, None

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, N, Ca) → (B, N·hop) float32."""
        z = latents.float()
        if self.tail is not None and self.tail.shape[0] != z.shape[0]:
            raise ValueError(f"batch changed from {self.tail.shape[0]} to {z.shape[0]}")
        frames, self.states = self.ae.decode_frames(z, self.states)
        wave, self.tail = self.ae.overlap_add(frames, self.tail)
        return wave.numpy().astype(np.float32, copy=False)


class AudioEncoderStream:
    """Waveform → latents (the encoder sees whole inputs; it is used offline and for
    bring-your-own-speech, where the audio is known ahead)."""

    def __init__(self, ae: AudioAE) -> None:
        self.ae = ae.eval()

    def reset(self) -> None:
        """Stateless."""

    @torch.inference_mode()
    def encode(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, S) float → (B, ⌈S/hop⌉, Ca); the input is zero-padded to a whole latent frame."""
        x = torch.as_tensor(wave, dtype=torch.float32)
        pad = (-x.shape[-1]) % self.ae.hop
        return self.ae.encode(F.pad(x, (0, pad)))
