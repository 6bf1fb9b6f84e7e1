"""The three networks of the VAE-GAN (Larsen et al. 2015, "Autoencoding beyond pixels").

Shapes below are for the default config (64×64 RGB, latent 128, paper widths); B is batch.

    Encoder       (B, 3, 64, 64) -> mu, logvar  (B, 128) each
    Decoder       (B, 128)       -> (B, 3, 64, 64) in [-1, 1]
    Discriminator (B, 3, 64, 64) -> logit (B,), Dis_l features (B, 256, 8, 8)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facegen_core.config import ModelConfig


def _conv_block(c_in: int, c_out: int, k: int, stride: int, norm: bool = True) -> nn.Sequential:
    # Bias is redundant before BatchNorm; keep it when there is no norm.
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _NearestUp2Copy(torch.autograd.Function):
    """×2 nearest on an NCHW-contiguous (B, C, s, s) tensor, with a 2×2-block sum for backward.

    Why not autograd's own backward of the broadcast view: it reduces the (B, C, s, 2, s, 2)
    gradient over dims 3 and 5 in one strided pass, measured the slowest step of the faces64
    decoder's backward on an AVX2 CPU in fp32 (aten::sum, 0.67 s of a 3.8 s encoder-training
    step at batch 32, 1 thread). Adding the four phases of the 2×2 grid is 3-5× faster. The
    backward is made of differentiable ops, so a double backward still works."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # (B, C, 2s, 2s) -> (B, C, s, s)
        return g[:, :, 0::2, 0::2] + g[:, :, 0::2, 1::2] + g[:, :, 1::2, 0::2] + g[:, :, 1::2, 1::2]


class NearestUp2(nn.Module):
    """×2 nearest-neighbour upsampling, (B, C, s, s) -> (B, C, 2s, 2s), as ``nn.Upsample(
    scale_factor=2, mode="nearest")`` computes it, bit for bit (a pure copy).

    On an NCHW-contiguous tensor (serving, refinement, ``--memory-format contiguous``) it is a
    broadcast view reshaped: measured on the faces64 decoder's three upsamplings, 1 row, 1
    thread: 1.3 ms against interpolate's 4.2 ms, 14% of the whole decoder (docs/bench.md); its
    backward is ``_NearestUp2Copy``'s. A channels-last tensor (training's default layout) keeps
    interpolate, which preserves its memory format."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous() or x.dim() != 4:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        out: torch.Tensor = _NearestUp2Copy.apply(x)
        return out


def _upsample(c_in: int, c_out: int, k: int, mode: str) -> list[nn.Module]:
    """(B, c_in, s, s) -> (B, c_out, 2s, 2s), without bias (BatchNorm follows)."""
    if mode == "nearest":
        # A 3×3 conv after ×2 nearest: every output pixel gets the same number of taps, so no
        # checkerboard (Odena et al. 2016); 3×3 at 2s costs 1.44× a 5×5 deconv from s.
        return [NearestUp2(), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)]
    # output_padding=1 makes a k×k stride-2 deconv exactly double the side.
    return [nn.ConvTranspose2d(c_in, c_out, k, 2, k // 2, output_padding=1, bias=False)]


class ResBlock(nn.Module):
    """(B, C, s, s) -> (B, C, s, s): ReLU(x + BN(conv3×3(ReLU(BN(conv3×3(x)))))) (He et al. 2016).

    The second BatchNorm's scale starts at zero (Goyal et al. 2017, "Accurate, Large Minibatch
    SGD", zero-γ), so a new block is the identity on its (post-ReLU, non-negative) input: blocks
    added to a trained encoder (``--enc-res-blocks`` with ``--init-from``) leave its output as it
    was at step 0 and learn from there."""

    def __init__(self, c: int) -> None:
        super().__init__()
        last_bn = nn.BatchNorm2d(c)
        nn.init.zeros_(last_bn.weight)
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            last_bn,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Encoder(nn.Module):
    """q(z|x): three 5×5 stride-2 convs, ``enc_res_blocks`` residual blocks, a light head to (mu, logvar).

    Why not the paper's head: its FC 16384 -> 2048 layer alone holds 34M parameters
    (134 MB in fp32), six times the rest of the serving model. A 1×1 conv first squeezes
    the (256, 8, 8) map to (16, 8, 8), keeping every spatial position, so one FC of
    1024 -> 2·latent (262k weights) suffices. The artifact stays under 25 MB.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        k = cfg.kernel_size
        blocks, c = [], cfg.channels
        for w in cfg.enc_widths:
            blocks.append(_conv_block(c, w, k, stride=2))
            c = w
        self.features = nn.Sequential(*blocks)
        # Empty (no weights, no state-dict keys) unless enc_res_blocks > 0.
        self.res = nn.Sequential(*(ResBlock(c) for _ in range(cfg.enc_res_blocks)))
        self.squeeze = _conv_block(c, cfg.enc_head_channels, 1, stride=1)
        side = cfg.image_size >> len(cfg.enc_widths)
        self.head = nn.Linear(cfg.enc_head_channels * side * side, 2 * cfg.latent_dim)
        self.latent_dim = cfg.latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.res(self.features(x))  # (B, 256, 8, 8)
        h = self.squeeze(h).flatten(1)  # (B, 16·8·8 = 1024)
        mu, logvar = self.head(h).float().chunk(2, dim=1)  # (B, 128) each
        # Clamp keeps exp(logvar) finite on adversarial or out-of-distribution uploads.
        return mu, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """p(x|z), also the GAN generator: FC to (256, 8, 8), three 5×5 deconvs, 5×5 conv, tanh."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        k = cfg.kernel_size
        self.side = cfg.image_size >> len(cfg.dec_widths)
        self.c0 = cfg.dec_widths[0]
        n0 = self.c0 * self.side * self.side
        self.fc = nn.Sequential(nn.Linear(cfg.latent_dim, n0, bias=False), nn.BatchNorm1d(n0), nn.ReLU(True))
        ups: list[nn.Module] = []
        c = self.c0
        for w in cfg.dec_widths:
            ups += [*_upsample(c, w, k, cfg.upsample), nn.BatchNorm2d(w), nn.ReLU(True)]
            c = w
        self.up = nn.Sequential(*ups)
        self.to_image = nn.Conv2d(c, cfg.channels, k, 1, k // 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.c0, self.side, self.side)  # (B, 256, 8, 8)
        h = self.up(h)  # (B, 32, 64, 64)
        return torch.tanh(self.to_image(h))  # (B, 3, 64, 64)


DIS_NORMS = ("none", "spectral", "batch")


class Discriminator(nn.Module):
    """Dis(x): 5×5 conv 32 (stride 1), then stride-2 convs 128, 256, 256, FC 512, FC 1.

    ``forward`` returns the logit and Dis_l, the 4th conv's activations, whose distance
    is the learned similarity metric of the paper (eq. 9). ``norm`` (DIS_NORMS):
    "batch" is the paper's BatchNorm after every conv but the first; "spectral" is spectral
    norm on every layer (Miyato et al. 2018) instead of BN; "none" is plain convolutions,
    kept in check by the R1 penalty alone, as StyleGAN2's discriminator is (Karras et al.
    2020). BN couples the real and fake rows of a batch; spectral norm on every layer plus R1
    held the bundled v2's discriminator at chance for a whole run (its loss 1.31-1.36).
    """

    def __init__(self, cfg: ModelConfig, norm: str = "batch") -> None:
        super().__init__()
        if norm not in DIS_NORMS:
            raise ValueError(f"Unknown discriminator norm {norm!r}; use one of {DIS_NORMS}.")
        k = cfg.kernel_size
        sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        convs: list[nn.Module] = []
        c = cfg.channels
        for i, w in enumerate(cfg.dis_widths):
            stride = 1 if i == 0 else 2
            use_bn = i > 0 and norm == "batch"  # paper: no BN on the first layer
            layers: list[nn.Module] = [sn(nn.Conv2d(c, w, k, stride, k // 2, bias=not use_bn))]
            if use_bn:
                layers.append(nn.BatchNorm2d(w))
            convs.append(nn.Sequential(*layers))
            c = w
        self.convs = nn.ModuleList(convs)
        side = cfg.image_size >> (len(cfg.dis_widths) - 1)
        self.fc = nn.Sequential(
            sn(nn.Linear(c * side * side, cfg.dis_fc)),
            nn.ReLU(True),
            sn(nn.Linear(cfg.dis_fc, 1)),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for conv in self.convs:
            # ReLU is applied out of place: Dis_l (the pre-activation of the last conv,
            # after BN) must not be overwritten, it feeds the similarity loss.
            feat = conv(h)
            h = torch.relu(feat)
        logit = self.fc(h.flatten(1)).squeeze(1)  # (B,)
        return logit.float(), feat  # feat: (B, 256, 8, 8) = Dis_l


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_autoencoder(cfg: ModelConfig) -> tuple[Encoder, Decoder]:
    """The serving pair; what an artifact's ``model.safetensors`` holds."""
    return Encoder(cfg), Decoder(cfg)
