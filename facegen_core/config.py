"""Architecture hyperparameters of the VAE-GAN, in one dataclass saved beside the weights.

The service rebuilds the networks from ``config.json`` alone (as diffusers does), so every
field that changes a tensor shape, or the way an input image is cropped, lives here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_IMAGE_SIZES = (32, 64, 128)
SUPPORTED_CHANNELS = (1, 3)
CROP_MODES = ("celeba", "center", "none", "align")
# How the decoder doubles its side: "deconv" (the paper's stride-2 transposed convolutions)
# or "nearest" (nearest-neighbour ×2, then a 3×3 convolution: Odena, Dumoulin & Olah 2016,
# "Deconvolution and Checkerboard Artifacts"; a k×k deconv whose k is not divisible by its
# stride overlaps unevenly and leaves a checkerboard).
UPSAMPLE_MODES = ("deconv", "nearest")


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of Encoder, Decoder and Discriminator (Larsen et al. 2015, table in appendix).

    The defaults are the paper's 64×64 widths with a lighter encoder head (see
    ``networks.Encoder``); ``small()`` is the CPU-trainable variant the bundled model uses.
    """

    image_size: int = 64
    channels: int = 3
    latent_dim: int = 128
    # Encoder: one 5×5 stride-2 conv per width, 64 → 32 → 16 → 8.
    enc_widths: tuple[int, ...] = (64, 128, 256)
    # 1×1 conv bottleneck before the fully connected μ/logσ² head.
    enc_head_channels: int = 16
    # Residual 3×3 blocks after the last stride-2 conv (0: the original encoder, so config.json
    # files written before this field existed rebuild the same networks).
    enc_res_blocks: int = 0
    # Decoder: FC to (dec_widths[0], s, s), then one 5×5 stride-2 deconv per width.
    dec_widths: tuple[int, ...] = (256, 128, 32)
    # Discriminator: first conv stride 1, the rest stride 2; Dis_l is the last conv's output.
    dis_widths: tuple[int, ...] = (32, 128, 256, 256)
    dis_fc: int = 512
    kernel_size: int = 5
    # How a photo is cropped to a square before resizing (see preprocess.crop_box).
    input_crop: str = "celeba"
    # Decoder upsampling (UPSAMPLE_MODES). "deconv" stays the default so that config.json
    # files written before this field existed rebuild the same networks.
    upsample: str = "deconv"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_size not in SUPPORTED_IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {self.image_size}.")
        if self.channels not in SUPPORTED_CHANNELS:
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}.")
        if self.enc_res_blocks < 0:
            raise ValueError(f"enc_res_blocks must be 0 or more, got {self.enc_res_blocks}.")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {self.latent_dim}.")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so 'same' padding exists, got {self.kernel_size}.")
        if self.input_crop not in CROP_MODES:
            raise ValueError(f"input_crop must be one of {CROP_MODES}, got {self.input_crop!r}.")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}.")
        for name in ("enc_widths", "dec_widths", "dis_widths"):
            widths = getattr(self, name)
            object.__setattr__(self, name, tuple(int(w) for w in widths))
            if not widths or any(w < 1 for w in widths):
                raise ValueError(f"{name} must be a non-empty list of positive widths.")
        for name in ("enc_widths", "dec_widths"):
            if self.image_size >> len(getattr(self, name)) < 2:
                raise ValueError(f"{name} has too many stride-2 layers for image_size {self.image_size}.")
        if self.image_size >> (len(self.dis_widths) - 1) < 2:
            raise ValueError(f"dis_widths has too many stride-2 layers for image_size {self.image_size}.")

    @classmethod
    def small(cls, **overrides: Any) -> ModelConfig:
        """Half-width variant: about 4× fewer FLOPs, trainable on a 2-core CPU in an hour."""
        base: dict[str, Any] = dict(
            enc_widths=(32, 64, 128),
            dec_widths=(128, 64, 32),
            dis_widths=(32, 64, 128, 128),
            dis_fc=256,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def tiny(cls, **overrides: Any) -> ModelConfig:
        """Seeded test-size model (channels 4/8, like diffusers' fast tests)."""
        base: dict[str, Any] = dict(
            image_size=32,
            latent_dim=8,
            enc_widths=(4, 8, 8),
            enc_head_channels=4,
            dec_widths=(8, 8, 4),
            dis_widths=(4, 8, 8, 8),
            dis_fc=16,
            kernel_size=3,
        )
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown model config keys {unknown}; this facegen is too old for it?")
        kwargs: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
