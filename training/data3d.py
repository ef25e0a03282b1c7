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
from scipy.ndimage import rotate

from ..runtime.errors import InputError
from .config import TrainConfig
from .data import foreground_weights


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
        self.noise: list = []  # no recorruption in 3D
        self.cdfs = [foreground_weights(s.max(axis=0), cfg.patch_size) for s in self.stacks]
        size = cfg.patch_size
        self.window = int(math.ceil(size * 1.5 / 2) * 2) if cfg.rotation else size

    def crop(self) -> np.ndarray:
        """One normalised ``crop_z x P x P`` crop, augmented."""
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
        return ((block - lo) / (hi - lo)).astype(np.float32)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(input, target, full)``: ``[n, 1, Z/2, P, P]`` twice and ``[n, 1, Z, P, P]``."""
        full = np.stack([self.crop() for _ in range(n)])[:, None]
        return full[:, :, 0::2], full[:, :, 1::2], full
