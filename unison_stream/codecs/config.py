"""Architecture of the two codecs (``OmegaConf.structured`` schemas): what the weights are
built from.

The latent shapes are *not* chosen here: they come from :class:`unison_stream.config.LatentConfig`
(channels, spatial downsample, time stride, audio rate) so the codecs always produce exactly
what the model consumes. These dataclasses hold only widths, depths and the decoder's optional
parts; their values are saved beside the weights (``weights/<kind>.yaml``) and read back at load
time. How a codec is trained is configured apart, in
:mod:`unison_stream.training.codec_config`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AudioCodecConfig", "VideoCodecConfig"]


@dataclass
class VideoCodecConfig:
    """Convolutional video AE: 2 frames ↔ one latent frame, decoder causal over latent frames."""

    widths: tuple[int, ...] = (32, 64, 128)  # channels at 64², 32², 16² (128² frames)
    blocks: int = 1  # residual blocks per resolution (decoder; the encoder mirrors it)
    temporal_context: int = 1  # previous latent frames the decoder sees (carried state)
    # the decoder also reads a reference frame of the person (the session's portrait): 8×8
    # latents cannot carry a 3-pixel iris or a hairline, the reference can (docs/codecs.md)
    reference: bool = False
    # ... and looks the portrait up (windowed cross-attention at quarter resolution): an iris
    # a few pixels from where the frame's is still lends its colour (docs/codecs.md)
    reference_attention: bool = False
    reference_window: int = 7  # cells (4 px) a side: ±12 px
    reference_heads: int = 2
    reference_dim: int = 16


@dataclass
class AudioCodecConfig:
    """STFT-domain audio AE with a Vocos-style iSTFT head (``docs/codecs.md`` "Audio codec")."""

    n_fft: int = 640  # STFT size of the decoder head and the encoder input (40 ms)
    stft_hop: int = 160  # 10 ms; latent hop (640 at 25 Hz) / stft_hop = 4 frames per latent
    # the decoder head's own STFT (0: the encoder's). A shorter window smears an attack over
    # fewer ms before it (pre-echo): 320 / 80 bounds it at 20 ms instead of 40.
    dec_n_fft: int = 0
    dec_stft_hop: int = 0
    width: int = 256  # ConvNeXt width
    enc_blocks: int = 3  # the encoder only has to summarise; the decoder does the vocoding
    dec_blocks: int = 6
    kernel: int = 7  # depthwise kernel; the decoder pads it causally (left only)
    mlp_ratio: int = 2  # 2 (not Vocos' 3) keeps both codecs ≤ 8 MB in fp16
