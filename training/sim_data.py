"""ZS-DeconvNet-SIM training data: recorrupted raw SIM sets, reconstructed into pairs.

METHOD.md section 5: the raw frames are recorrupted into two sets (input: more noise; target:
the complementary noise), each set is reconstructed with the conventional SIM algorithm (the
pattern parameters estimated once, from the raw data), and the pair of reconstructions trains
the 2D network without upsampling. A reconstruction takes the whole field, so a pool of
``sim_pairs`` pairs is made before training; patches are then drawn from the pool with the same
foreground bias, rotations and flips as in 2D. Arrays ``[A*P, Y, X]`` (raw, ADU) and ``YX``
(reconstructions on the 2x grid).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ..runtime.errors import InputError
from .config import TrainConfig
from .data import (
    augment_pair,
    cut_window,
    draw_centre,
    foreground_weights,
    stack_pairs,
    window_size,
)
from .recorrupt import NoiseModel, estimate_noise, recorrupt
from .sim_reconstruct import SIMParameters, estimate_parameters, reconstruct

log = logging.getLogger(__name__)


@dataclass
class SIMAcquisition:
    """One raw SIM stack with what training needs from it."""

    raw: np.ndarray
    psf: np.ndarray
    params: SIMParameters
    noise: NoiseModel
    reconstruction: np.ndarray

    @classmethod
    def prepare(cls, raw: np.ndarray, psf: np.ndarray, cfg: TrainConfig) -> SIMAcquisition:
        """Estimate noise and pattern, and reconstruct the raw data conventionally."""
        raw = np.asarray(raw, np.float32)
        noise = estimate_noise(raw[0], cfg.background, cfg.gain)
        params = estimate_parameters(raw, psf, cfg.sim_phases, noise.background)
        recon = reconstruct(raw, psf, params, cfg.sim_wiener, noise.background)
        return cls(raw, psf, params, noise, recon)

    def describe(self) -> str:
        parts = [
            f"angle {a}: |k| {math.hypot(*k):.4f} cycles/px, phase {p:.2f} rad, modulation {m:.2f}"
            for a, (k, p, m) in enumerate(
                zip(self.params.k, self.params.phase, self.params.modulation)
            )
        ]
        return "SIM pattern " + "; ".join(parts)


def recorrupted_sets(
    raw: np.ndarray, noise: NoiseModel, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One recorrupted ``(input, target)`` pair of raw sets; one draw of alpha, beta1, beta2
    for the whole set, independent noise per frame and pixel."""
    return recorrupt(
        raw,
        noise,
        alpha=rng.uniform(*cfg.alpha_range),
        beta1=cfg.gain * rng.uniform(*cfg.beta1_range),
        beta2_scale=rng.uniform(*cfg.beta2_scale_range),
        rng=rng,
    )


def reconstructed_pairs(
    acquisition: SIMAcquisition, cfg: TrainConfig, seed: int, count: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` reconstructed pairs, pair ``j`` from its own stream ``(seed, j)``."""
    pairs = []
    for j in range(count):
        rng = np.random.default_rng((seed, 7919, j))
        noisy_in, noisy_gt = recorrupted_sets(acquisition.raw, acquisition.noise, cfg, rng)
        background = acquisition.noise.background
        pairs.append(
            tuple(
                reconstruct(s, acquisition.psf, acquisition.params, cfg.sim_wiener, background)
                for s in (noisy_in, noisy_gt)
            )
        )
    return pairs


class SIMPairSampler:
    """Patches from a pool of reconstructed pairs (same interface as the 2D sampler).

    ``ranges`` (normalisation) come from the conventional reconstruction of the raw data, which
    is what the model is applied to afterwards.
    """

    def __init__(self, acquisitions: list[SIMAcquisition], cfg: TrainConfig, rng):
        self.cfg, self.rng = cfg, rng
        self.pairs, self.owner = [], []
        for i, acq in enumerate(acquisitions):
            made = reconstructed_pairs(acq, cfg, cfg.seed + 1000 * i, cfg.sim_pairs)
            self.pairs += made
            self.owner += [i] * len(made)
        self.noise = [a.noise for a in acquisitions]
        self.ranges = []
        for acq in acquisitions:
            if min(acq.reconstruction.shape) < cfg.patch_size:
                raise InputError(
                    f"the SIM reconstruction ({acq.reconstruction.shape[0]}x"
                    f"{acq.reconstruction.shape[1]}) is smaller than the patch "
                    f"({cfg.patch_size}); use a smaller --patch-size"
                )
            lo, hi = np.percentile(acq.reconstruction, [cfg.norm_low, cfg.norm_high])
            if not hi > lo:
                raise InputError("the SIM reconstruction is constant; nothing to learn from it")
            self.ranges.append((float(lo), float(hi)))
        self.cdfs = [foreground_weights(a.reconstruction, cfg.patch_size) for a in acquisitions]
        self.window = window_size(cfg)

    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """One normalised ``(input, target)`` patch pair, ``patch x patch`` float32."""
        cfg, rng = self.cfg, self.rng
        j = int(rng.integers(len(self.pairs)))
        k = self.owner[j]
        source, target = self.pairs[j]
        cy, cx = draw_centre(self.cdfs[k], source.shape, rng)
        x = cut_window(source, cy, cx, self.window)
        y = cut_window(target, cy, cx, self.window)
        return augment_pair(x, y, self.ranges[k], cfg, rng)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs as ``[n, 1, P, P]`` arrays (input, target)."""
        return stack_pairs([self.pair() for _ in range(n)])
