"""The two-stage 3D network of ZS-DeconvNet: two residual channel-attention networks (RCAN).

Each stage (METHOD.md section 3): conv to ``channels``; ``groups`` residual groups of
``rcabs`` residual channel-attention blocks (conv, LeakyReLU 0.2, conv, LeakyReLU 0.2, channel
attention with reduction ``r``, + identity) each closed by a conv and a skip; a long skip; then
a tail conv + LeakyReLU and a conv to 1 channel + LeakyReLU(0.2). Stage 2 optionally upsamples
y and x by 2 (nearest) before its tail; with ``positive`` its last activation is a ReLU
(config ``positivity``). Tensors are ``[N, 1, Z, Y, X]``.

Channel attention here pools over a local window (``ca_window``, default 3x9x9) rather than the
whole volume: the receptive field stays finite, so tiled prediction equals untiled prediction;
``ca_window=None`` restores the reference's global pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import TrainConfig


def _conv(c_in: int, c_out: int) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, 3, padding=1)


class ChannelAttention3D(nn.Module):
    """Squeeze-and-excitation over a local (or the global) window."""

    def __init__(self, channels: int, reduction: int, window: tuple[int, int, int] | None):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.window = window
        self.squeeze = nn.Conv3d(channels, hidden, 1)
        self.excite = nn.Conv3d(hidden, channels, 1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is None:
            return F.adaptive_avg_pool3d(x, 1)
        for axis, size in enumerate(self.window):  # separable box mean, borders not counted
            if size > 1:
                kernel = [1, 1, 1]
                kernel[axis] = size
                padding = [k // 2 for k in kernel]
                x = F.avg_pool3d(x, kernel, stride=1, padding=padding, count_include_pad=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.excite(F.relu(self.squeeze(self._pool(x)))))
        return x * weights


class RCAB(nn.Module):
    def __init__(self, channels: int, reduction: int, window):
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels),
            nn.LeakyReLU(0.2),
            _conv(channels, channels),
            nn.LeakyReLU(0.2),
            ChannelAttention3D(channels, reduction, window),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    def __init__(self, channels: int, rcabs: int, reduction: int, window):
        super().__init__()
        self.body = nn.Sequential(
            *[RCAB(channels, reduction, window) for _ in range(rcabs)], _conv(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCANStage(nn.Module):
    """One stage: ``[N, 1, Z, Y, X]`` -> ``[N, 1, Z, upsample*Y, upsample*X]``."""

    def __init__(
        self,
        channels: int,
        groups: int,
        rcabs: int,
        reduction: int,
        window,
        upsample: int = 1,
        positive: bool = False,
    ):
        super().__init__()
        self.upsample = upsample
        self.head = _conv(1, channels)
        self.body = nn.Sequential(
            *[ResidualGroup(channels, rcabs, reduction, window) for _ in range(groups)],
            _conv(channels, channels),
        )
        self.tail = nn.Sequential(
            _conv(channels, channels),
            nn.LeakyReLU(0.2),
            _conv(channels, 1),
            nn.ReLU() if positive else nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        features = features + self.body(features)
        if self.upsample > 1:
            features = F.interpolate(
                features,
                scale_factor=(1.0, float(self.upsample), float(self.upsample)),
                mode="nearest",
            )
        return self.tail(features)


class ZSDeconvNet3D(nn.Module):
    """Two RCAN stages: returns ``(denoised, deconvolved)``."""

    def __init__(
        self,
        channels: int = 64,
        groups: int = 2,
        rcabs: int = 2,
        reduction: int = 16,
        window: tuple[int, int, int] | None = (3, 9, 9),
        upsample: int = 2,
        positive: bool = False,
    ):
        super().__init__()
        self.stage1 = RCANStage(channels, groups, rcabs, reduction, window)
        self.stage2 = RCANStage(channels, groups, rcabs, reduction, window, upsample, positive)

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage1(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        denoised = self.stage1(x)
        return denoised, self.stage2(denoised)

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> ZSDeconvNet3D:
        return cls(
            cfg.rcan_channels,
            cfg.rcan_groups,
            cfg.rcab_per_group,
            cfg.ca_reduction,
            cfg.ca_window,
            cfg.upsample,
            cfg.positivity,
        )


def rcan_halo(cfg: TrainConfig) -> tuple[int, int, int]:
    """Receptive-field radius (z, y, x) in input voxels of the two-stage network.

    Per stage: head, 2 convs per RCAB, 1 per group, the body conv and 2 tail convs each add 1;
    every channel attention adds half its window. Stage 2's tail runs on the upsampled grid,
    where its 2 convs reach 1 input voxel in y and x. Global attention has no finite radius:
    the halo then covers the convolutions only and tiling is approximate.
    """
    convs = 1 + cfg.rcan_groups * (2 * cfg.rcab_per_group + 1) + 1 + 2
    n_ca = cfg.rcan_groups * cfg.rcab_per_group
    window = cfg.ca_window or (1, 1, 1)
    halo_z = 2 * (convs + n_ca * (window[0] // 2))
    halo_xy = [2 * (convs + n_ca * (w // 2)) for w in window[1:]]
    if cfg.upsample > 1:
        halo_xy = [h - 2 + 1 for h in halo_xy]  # stage 2's tail convs act on half-size voxels
    return (halo_z, *halo_xy)
