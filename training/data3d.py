"""3D training pairs from one noisy stack: odd and even slices (METHOD.md section 3).

No recorruption: two neighbouring planes see the same structure with independent noise, so a
crop of ``crop_z`` slices split into its even-indexed and odd-indexed slices gives an input and
a target (``crop_z / 2`` slices each). Crops are foreground-biased in y and x (on the maximum
projection), rotated about z by a random angle (from a 1.5x window) and flipped, the same for
both halves; each stack is normalised with its own whole-stack percentiles. Arrays ``ZYX``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter, rotate

from ..runtime.errors import InputError
from .config import TrainConfig
from .data2d import foreground_weights


class StackSampler:
    """Draws normalised ``(input, target, full)`` crops from noisy stacks.

    Parameters
    ----------
    stacks : list of numpy.ndarray
        Noisy ``ZYX`` stacks (a time series gives several).
    cfg : TrainConfig
        ``crop_z``, ``patch_size``, normalisation percentiles.
    rng : numpy.random.Generator
        The only source of randomness (checkpointed).
    """

    def __init__(self, stacks: list[np.ndarray], cfg: TrainConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.stacks = [np.asarray(s, np.float32) for s in stacks]
        for s in self.stacks:
            if s.ndim != 3:
                raise InputError(f"3D training needs ZYX stacks, got shape {s.shape}")
            if s.shape[0] < cfg.crop_z:
                raise InputError(
                    f"stack of {s.shape[0]} slices is thinner than the training crop "
                    f"({cfg.crop_z} slices); use a smaller crop_z in the config (even, >= 4)"
                )
            if min(s.shape[1:]) < cfg.patch_size:
                raise InputError(
                    f"stack of {s.shape[1]}x{s.shape[2]} px is smaller than the training patch "
                    f"({cfg.patch_size} px); use --patch-size {min(s.shape[1:])} or less"
                )
        self.ranges = [
            tuple(float(v) for v in np.percentile(s, [cfg.norm_low, cfg.norm_high]))
            for s in self.stacks
        ]
        for lo, hi in self.ranges:
            if not hi > lo:
                raise InputError("a training stack is constant; nothing to learn from it")
        self.backgrounds = [  # one smoothing pass per stack, only where the loss uses it
            (background_level(s) - lo) / (hi - lo) if cfg.positivity else 0.0
            for s, (lo, hi) in zip(self.stacks, self.ranges)
        ]
        self.noise: list = []  # no recorruption in 3D
        self.cdfs = [foreground_weights(s.max(axis=0), cfg.patch_size) for s in self.stacks]
        size = cfg.patch_size
        self.window = int(math.ceil(size * 1.5 / 2) * 2) if cfg.rotation else size

    def crop(self) -> tuple[np.ndarray, float]:
        """One normalised ``crop_z x P x P`` crop, augmented, and its stack's normalised
        background level."""
        cfg, rng = self.cfg, self.rng
        k = int(rng.integers(len(self.stacks)))
        stack = self.stacks[k]
        z0 = int(rng.integers(0, stack.shape[0] - cfg.crop_z + 1))
        idx = int(np.searchsorted(self.cdfs[k], rng.random() * self.cdfs[k][-1]))
        cy, cx = np.unravel_index(min(idx, stack.shape[1] * stack.shape[2] - 1), stack.shape[1:])
        half = self.window // 2

        def axis(c, n):
            i = np.abs(np.arange(c - half, c - half + self.window))
            return np.where(i >= n, 2 * n - 2 - i, i)

        block = stack[z0 : z0 + cfg.crop_z][:, axis(cy, stack.shape[1])][
            :, :, axis(cx, stack.shape[2])
        ]
        if cfg.rotation:
            block = rotate(
                block, rng.uniform(0, 360), axes=(1, 2), reshape=False, order=1, mode="reflect"
            )
        o = (block.shape[1] - cfg.patch_size) // 2
        block = block[:, o : o + cfg.patch_size, o : o + cfg.patch_size]
        block = np.rot90(block, int(rng.integers(4)), axes=(1, 2))
        if rng.integers(2):
            block = block[:, :, ::-1]
        lo, hi = self.ranges[k]
        return ((block - lo) / (hi - lo)).astype(np.float32), self.backgrounds[k]

    def batch(self, n: int) -> tuple[np.ndarray, ...]:
        """``(input, target, full, background)``: ``[n, 1, Z/2, P, P]`` twice,
        ``[n, 1, Z, P, P]`` and ``[n, 1, 1, 1, 1]``."""
        crops = [self.crop() for _ in range(n)]
        full = np.stack([c for c, _ in crops])[:, None]
        background = np.array([b for _, b in crops], np.float32).reshape(n, 1, 1, 1, 1)
        return full[:, :, 0::2], full[:, :, 1::2], full, background


def background_level(stack: np.ndarray) -> float:
    """The stack's background (its units): the 1st percentile of the stack smoothed by a
    Gaussian of sigma (1, 2, 2) voxels, i.e. the darkest region's level with most of the noise
    averaged out. It errs low (tests/test_training3d.py: below, and within 5 %, of the true
    level of a Poisson stack), which keeps real signal above it. Linear: normalising the stack
    first gives the normalised level.
    """
    smooth = gaussian_filter(np.asarray(stack, np.float32), (1, 2, 2), output=np.float32)
    return float(np.percentile(smooth, 1))
