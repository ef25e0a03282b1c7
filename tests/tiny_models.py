"""Small two-output networks with a known receptive field, exported with the real exporter.

They stand in for trained models in runtime tests: the second output is upsampled 2x in y and
x like ZS-DeconvNet's deconvolved output, and pooling gives them a size multiple.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from zsdeconvnet.export.onnx import export_model
from zsdeconvnet.runtime.metadata import ModelMetadata

#: The smallest ZS-DeconvNet the trainer runs (config fields over the ``fast`` preset): for
#: tests of training mechanics, where what the network learns does not matter.
TINY_NET = dict(
    base_channels=4,
    levels=3,
    convs_per_level=1,
    sr_channels=8,
    patch_size=32,
    pad_xy=8,
    batch_size=2,
)
#: A halo that covers the tiny networks' receptive field (measured in test_tiling).
HALO = 10
#: The same for the two-stage tiny networks (two tiny networks one after the other)
STAGED_HALO = 2 * HALO


class Tiny2D(nn.Module):
    """conv -> pool -> conv -> up, skip; deconvolved = conv(up2(features))."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.c1 = nn.Conv2d(1, width, 3, padding=1)
        self.c2 = nn.Conv2d(width, width, 3, padding=1)
        self.den = nn.Conv2d(2 * width, 1, 3, padding=1)
        self.dec = nn.Conv2d(2 * width, 1, 3, padding=1)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(nn.functional.max_pool2d(a, 2)))
        f = torch.cat([a, nn.functional.interpolate(b, scale_factor=2.0, mode="nearest")], 1)
        up = nn.functional.interpolate(f, scale_factor=2.0, mode="nearest")
        return self.den(f) + x, self.dec(up)


class Tiny3D(nn.Module):
    """3D analogue: pooling in z, y and x; deconvolved upsampled 2x in y and x only."""

    def __init__(self, width: int = 3):
        super().__init__()
        self.c1 = nn.Conv3d(1, width, 3, padding=1)
        self.c2 = nn.Conv3d(width, width, 3, padding=1)
        self.den = nn.Conv3d(2 * width, 1, 3, padding=1)
        self.dec = nn.Conv3d(2 * width, 1, 3, padding=1)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(nn.functional.max_pool3d(a, 2)))
        f = torch.cat([a, nn.functional.interpolate(b, scale_factor=2.0, mode="nearest")], 1)
        up = nn.functional.interpolate(f, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return self.den(f) + x, self.dec(up)


class TinyStaged(nn.Module):
    """Two stages like ZS-DeconvNet's: ``denoised = first(x)``, ``deconvolved = second(denoised)``
    on the 2x grid, so the graph can be cut in two (``runtime.stages``)."""

    def __init__(self, ndim: int = 2):
        super().__init__()
        self.first, self.second = (Tiny2D(), Tiny2D()) if ndim == 2 else (Tiny3D(), Tiny3D())

    def forward(self, x):
        denoised = self.first(x)[0]
        return denoised, self.second(denoised)[1]


def tiny_metadata(ndim: int, **overrides) -> ModelMetadata:
    fields = dict(
        ndim=ndim,
        axes="YX" if ndim == 2 else "ZYX",
        output_scale=(2, 2) if ndim == 2 else (1, 2, 2),
        size_multiple=(2,) * ndim,
        halo=(HALO,) * ndim,
        input_pixel_size_nm=(65.0, 65.0) if ndim == 2 else (200.0, 65.0, 65.0),
        output_pixel_size_nm=(32.5, 32.5) if ndim == 2 else (200.0, 32.5, 32.5),
        psf={"source": "none (test model)"},
        training={"preset": "test", "iterations": 0, "seed": 0},
    )
    fields.update(overrides)
    return ModelMetadata(**fields)


def build_tiny(path: Path, ndim: int = 2, seed: int = 0, staged: bool = False, **overrides) -> Path:
    """Export a random-weight tiny network with full metadata to ``path`` (``staged``: the
    two-stage one, with ``STAGED_HALO``)."""
    torch.manual_seed(seed)
    if staged:
        module = TinyStaged(ndim)
        overrides.setdefault("halo", (STAGED_HALO,) * ndim)
    else:
        module = Tiny2D() if ndim == 2 else Tiny3D()
    shape = (1, 1, 32, 32) if ndim == 2 else (1, 1, 8, 16, 16)
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    export_model(module, tiny_metadata(ndim, **overrides), path, x)
    return path
