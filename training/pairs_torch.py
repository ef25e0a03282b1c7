"""Training pairs made on the training device (torch), from windows cut on the host.

The same pair as :meth:`data.PatchSampler.pair` (recorruption, rotation, crop, quarter turns,
flip, normalisation; METHOD.md section 2), computed for the whole batch at once with torch, so
on a GPU the per-sample scipy filters and rotations stop holding the network up
(benchmarks/RESULTS.md: 2D GPU steps were bound by the host side). What stays on the host is
cheap: drawing the patch centres and the per-pair numbers from the per-sample random stream,
and cutting the windows. ``z`` is drawn on the device from a generator seeded from that stream,
so a run is as repeatable as with numpy pairs (same device, same seed), though not the same
numbers. Arrays are ``[n, 1, Y, X]``, values in ADU until normalised.

Differences from the numpy pairs, by design: float32 instead of float64 arithmetic, and
bilinear resampling by ``grid_sample`` instead of ``scipy.ndimage.rotate`` (order 1); the
central crop never reaches the window's edge, so edge handling does not differ
(tests/test_pairs_torch.py compares the two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .recorrupt import NoiseModel


@dataclass(frozen=True)
class PairDraw:
    """The random choices of one training pair (drawn on the host).

    Attributes
    ----------
    window : numpy.ndarray
        Noisy window ``W x W`` around the patch centre (ADU).
    noise : NoiseModel
        Its frame's camera noise model.
    value_range : tuple of float
        Its frame's normalisation percentiles (ADU).
    alpha, beta1, beta2_scale : float
        Recorruption draws (``beta1`` already times the gain).
    angle : float
        Rotation in degrees (0 when rotation is off).
    turns : int
        Quarter turns after the crop.
    flip : bool
        Mirror the last axis after the turns.
    z_seed : int
        Seed of the device generator that draws ``z``.
    """

    window: np.ndarray
    noise: NoiseModel
    value_range: tuple[float, float]
    alpha: float
    beta1: float
    beta2_scale: float
    angle: float
    turns: int
    flip: bool
    z_seed: int


def local_mean(y: torch.Tensor) -> torch.Tensor:
    """5x5 mean over the last two axes of ``[n, 1, Y, X]``, edges mirrored as scipy's
    ``uniform_filter(mode="reflect")`` does (``d c b a | a b c d``; torch's own ``reflect``
    padding leaves out the edge sample, so the borders are built from flipped slices)."""
    y = torch.cat([y[..., :2, :].flip(-2), y, y[..., -2:, :].flip(-2)], dim=-2)
    y = torch.cat([y[..., :2].flip(-1), y, y[..., -2:].flip(-1)], dim=-1)
    return F.avg_pool2d(y, 5, stride=1)


def rotate_crop(pairs: torch.Tensor, angles_deg: torch.Tensor, patch: int) -> torch.Tensor:
    """Rotate ``[n, c, W, W]`` windows about their centres by ``angles_deg`` (bilinear) and keep
    the central ``patch x patch``; the same sense of rotation as ``scipy.ndimage.rotate``.

    The sampling grid covers only the output patch: pixel ``i`` of the patch reads the window
    at ``centre + R (i - (patch - 1) / 2)``, which ``affine_grid`` (corners aligned) gets from
    ``R * (patch - 1) / (W - 1)``.
    """
    n, channels, size, _ = pairs.shape
    rad = angles_deg.to(pairs.dtype) * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    scale = (patch - 1) / (size - 1)
    theta = torch.stack(
        [torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2
    ) * torch.tensor([scale, scale, 1.0], dtype=pairs.dtype, device=pairs.device)
    grid = F.affine_grid(theta, [n, channels, patch, patch], align_corners=True)
    return F.grid_sample(
        pairs, grid, mode="bilinear", padding_mode="reflection", align_corners=True
    )


def make_pairs(
    draws: list[PairDraw], patch: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``(input, target)`` batches ``[n, 1, patch, patch]`` float32 on ``device``."""
    windows = torch.from_numpy(np.stack([d.window for d in draws]).astype(np.float32))
    y = windows[:, None].to(device)
    column = torch.tensor(
        [
            [d.alpha, d.beta1, d.beta2_scale * d.noise.beta2, d.noise.background, d.angle]
            + list(d.value_range)
            for d in draws
        ],
        dtype=torch.float32,
    ).to(device)
    alpha, beta1, beta2, background, angle, low, high = (
        column[:, i].view(-1, 1, 1, 1) for i in range(column.shape[1])
    )
    sigma = torch.sqrt(beta1 * torch.clamp(local_mean(y) - background, min=0) + beta2)
    z = torch.cat(
        [
            torch.randn(
                (1, 1, *y.shape[-2:]),
                generator=torch.Generator(device=device).manual_seed(d.z_seed),
                device=device,
            )
            for d in draws
        ]
    )
    noisy = torch.cat([y + alpha * sigma * z, y - sigma * z / alpha], dim=1)  # input, target
    if y.shape[-1] != patch:
        noisy = rotate_crop(noisy, angle.view(-1), patch)
    noisy = (noisy - low) / (high - low)
    out = []
    for k, d in enumerate(draws):
        pair = torch.rot90(noisy[k], d.turns, dims=(-2, -1))
        out.append(pair.flip(-1) if d.flip else pair)
    pairs = torch.stack(out)
    return pairs[:, :1].contiguous(), pairs[:, 1:].contiguous()


def use_torch_pairs(backend: str, device: torch.device) -> bool:
    """Resolve ``pair_backend``: ``auto`` makes pairs with torch on CUDA, with numpy elsewhere
    (on this project's CPU torch made a batch 2.7x faster, but pairs are 4 % of a CPU step, so
    the step did not change and numpy, which made the CPU results, stays: benchmarks/RESULTS.md)."""
    if backend == "auto":
        return device.type == "cuda"
    return backend == "torch"
