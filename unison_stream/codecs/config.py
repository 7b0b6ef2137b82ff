"""Hyper-parameters of the two codecs and of their training (``OmegaConf.structured`` schemas).

The latent shapes are *not* chosen here: they come from :class:`unison_stream.config.LatentConfig`
(channels, spatial downsample, time stride, audio rate) so the codecs always produce exactly
what the model consumes. These dataclasses hold only widths, depths and training knobs; their
values are saved beside the weights (``weights/<kind>.yaml``) and read back at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AudioCodecConfig", "CodecTrainConfig", "VideoCodecConfig"]


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


@dataclass
class CodecTrainConfig:
    """One training run of one codec (``unison-stream train codec``)."""

    kind: str = "video"  # "video" or "audio"
    steps: int = 3000
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.0
    latent_noise: float = 0.1  # σ of Gaussian noise added to (normalised) latents in training
    latent_l2: float = 1e-3  # keeps latents near unit scale so the model sees sane inputs
    crop: int = 64  # video: crop side in pixels (the nets are fully convolutional)
    clip_latents: int = 3  # video latent frames per crop / audio latent frames ÷ 8 (see train)
    audio_latents: int = 24  # audio latent frames per crop (0.96 s at 25 Hz)
    val_every: int = 250
    ckpt_every: int = 250
    threads: int = 1
    seed: int = 0
    data_dir: str = "data/codec"
    out_dir: str = "runs/codec"
    stems: tuple[str, ...] = ("speech", "sfx", "mix")  # one audio codec for every stem
    init: str = ""  # "bundled": start from the bundled codec of this kind
    freeze_encoder: bool = False  # decoder only: latents, and a DiT trained on them, stay valid
    event_crop_prob: float = 0.0  # audio: share of crops holding an effect onset (SFX or mix)
    envelope_weight: float = 0.0  # audio: L1 between log-RMS envelopes (5 ms): sharp attacks
    edge_weight: float = 0.0  # video: L1 between pixel differences (sharp edges; docs/codecs.md)
    # video: L1 weighted up where a pixel differs from its neighbours (irises, pupils, lips)
    detail_weight: float = 0.0
    # video, reference decoder: L1 weighted up inside the eyes' boxes (the world's face layout of
    # the clip's identity, cached with it): an iris's colour is a few pixels of a crop
    eye_weight: float = 0.0
    # video: L1 of σ-1.5-px-blurred frames inside those boxes: an iris ring placed a pixel off
    # still counts as its colour (codecs/train.py _blurred_l1)
    eye_blur_weight: float = 0.0
    # video: L1 between local RMS luminance gradients (σ 2 px): an edge as steep as the truth's,
    # a pixel off, costs less than a soft one in place (codecs/train.py _sharpness_l1)
    sharp_weight: float = 0.0
    # video: train a decoder that reads a reference frame (VideoCodecConfig.reference); its
    # reference is another frame of the crop's clip, left out (zeros) this share of the time
    video_reference: bool = False
    reference_drop: float = 0.1
    video_reference_attention: bool = False  # the decoder also looks the reference up
    # learning rate of what a fine-tune (init=bundled) adds, a reference path or its attention
    # (lr: everything else)
    reference_lr: float = 2e-4
    # video: a patch discriminator's hinge loss on decoded frames (codecs/discriminator.py),
    # scaled by the adaptive weight × adv_weight; 0 = off. The decoder gets the term from step
    # adv_start on; the critic trains from step 0 (a fresh critic warms up on a trained decoder)
    adv_weight: float = 0.0
    adv_start: int = 0
    disc_lr: float = 2e-4
    disc_width: int = 32
    # audio: the codec built for training (init=bundled loads every bundled tensor that fits it,
    # so a decoder with its own STFT starts from the bundled encoder and conv blocks)
    audio_codec: AudioCodecConfig = field(default_factory=AudioCodecConfig)
    extra: dict[str, str] = field(default_factory=dict)
