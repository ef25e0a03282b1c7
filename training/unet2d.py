"""The two-stage 2D network of ZS-DeconvNet (METHOD.md section 2).

Stage 1 (denoiser): a U-Net, ``levels`` resolution levels (channels ``base * 2**l``),
``convs_per_level`` 3x3 conv + ReLU per level, max-pool down, nearest up + skip concatenation,
1-channel output. Stage 2 (deconvolver): the same U-Net on stage 1's output, then the 2x tail
and a 1-channel output with a ReLU (intensities are non-negative). Tail ``nearest`` (the
paper's): nearest 2x upsampling, then two ``sr_channels`` 3x3 convs on the fine grid. Tail
``shuffle`` (sub-pixel): the two convs at input resolution, a 1x1 conv to ``upsample**2``
channels and a pixel shuffle onto the fine grid: the same output size with the tail's
convolutions on a quarter of the pixels (on a CPU without bf16 the fine-grid convs were 44 % of
a training step, benchmarks/RESULTS.md). Tensors are ``[N, 1, Y, X]`` in the normalised domain.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import SR_TAILS, TrainConfig


def _block(c_in: int, c_out: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class UNet2D(nn.Module):
    """U-Net returning ``base``-channel features at input resolution."""

    def __init__(self, c_in: int = 1, base: int = 32, levels: int = 4, convs: int = 3):
        super().__init__()
        widths = [base * 2**i for i in range(levels)]
        self.down = nn.ModuleList()
        c = c_in
        for w in widths[:-1]:
            self.down.append(_block(c, w, convs))
            c = w
        self.bottom = _block(c, widths[-1], convs)
        self.up = nn.ModuleList()
        c = widths[-1]
        for w in reversed(widths[:-1]):
            self.up.append(_block(c + w, w, convs))
            c = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return x


class ZSDeconvNet2D(nn.Module):
    """Two-stage network: returns ``(denoised, deconvolved)``; deconvolved is ``upsample``x."""

    def __init__(
        self,
        base: int = 32,
        levels: int = 4,
        convs: int = 3,
        sr_channels: int = 128,
        upsample: int = 2,
        tail: str = "nearest",
    ):
        super().__init__()
        if tail not in SR_TAILS:
            raise ValueError(f"tail must be one of {SR_TAILS}, got {tail!r}")
        self.upsample = upsample
        self.shuffle = tail == "shuffle" and upsample > 1
        self.stage1 = UNet2D(1, base, levels, convs)
        self.head1 = nn.Conv2d(base, 1, 1)
        self.stage2 = UNet2D(1, base, levels, convs)
        self.tail = nn.Sequential(
            nn.Conv2d(base, sr_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(sr_channels, sr_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.head2 = nn.Conv2d(sr_channels, upsample**2 if self.shuffle else 1, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation for ReLU nets; a small positive bias on the output layers keeps
        # stage 2's output ReLU alive at the start (with torch's default init it started dead
        # everywhere and the SR output stayed zero: METHOD.md, pitfalls).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for head in (self.head1, self.head2):
            nn.init.normal_(head.weight, std=1e-2)
            nn.init.constant_(head.bias, 0.1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        denoised = self.head1(self.stage1(x))
        features = self.stage2(denoised)
        if self.shuffle:
            fine = F.pixel_shuffle(self.head2(self.tail(features)), self.upsample)
            return denoised, F.relu(fine)
        if self.upsample > 1:
            features = F.interpolate(features, scale_factor=float(self.upsample), mode="nearest")
        deconvolved = F.relu(self.head2(self.tail(features)))
        return denoised, deconvolved

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> ZSDeconvNet2D:
        return cls(
            cfg.base_channels,
            cfg.levels,
            cfg.convs_per_level,
            cfg.sr_channels,
            cfg.upsample,
            cfg.sr_tail,
        )


def unet_halo(levels: int, convs: int) -> int:
    """Receptive-field radius (input px) of one U-Net, counted conservatively.

    Each 3x3 conv at stride ``s`` adds ``s``; each pooling and each upsampling adds ``s``.
    """
    radius, stride = 0, 1
    for _ in range(levels - 1):
        radius += convs * stride + stride  # convs, then 2x2 pool
        stride *= 2
    radius += convs * stride  # bottom
    for _ in range(levels - 1):
        stride //= 2
        radius += stride + convs * stride  # upsample, then convs
    return radius


def model_halo(cfg: TrainConfig) -> int:
    """Receptive-field radius (input px) of the two-stage network, tail included (two 3x3
    convs: 1 input px on the fine grid, 2 at input resolution for the sub-pixel tail)."""
    tail = 2 if cfg.sr_tail == "shuffle" and cfg.upsample > 1 else 1
    return 2 * unet_halo(cfg.levels, cfg.convs_per_level) + tail
