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

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from ..physics.psf import PSF
from ..physics.sim_reconstruct import (
    SIMParameters,
    camera_psf,
    estimate_parameters,
    load_sim_stack,
    reconstruct,
)
from ..runtime.errors import InputError
from ..runtime.io import atomic_output, write_tiff
from .config import TrainConfig
from .data2d import (
    augment_pair,
    cut_window,
    draw_centre,
    foreground_weights,
    stack_pairs,
    window_size,
)
from .recorrupt import NoiseModel, noise_models, recorrupt

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
        (noise,) = noise_models([raw[0]], cfg.background, cfg.gain)
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
        beta1=noise.gain * rng.uniform(*cfg.beta1_range),
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


def prepare_sim_training(cfg, psf_path: Path, run_dir: Path | None):
    """Everything ``train --mode sim2d`` needs: ``(frames, psf, pixel_nm, sampler)``.

    ``frames`` are the conventional reconstructions (what the model is applied to), ``psf`` the
    reconstruction's effective PSF on their grid, ``pixel_nm`` their pixel size.
    """
    from ..physics.sim_reconstruct import effective_psf
    from ..training.datasim import SIMAcquisition, SIMPairSampler

    stacks, sizes = [], {}
    for path in cfg.images:
        stack, found = load_sim_stack(Path(path), cfg.sim_phases, cfg.channel)
        stacks.append(stack)
        sizes = sizes or found
    pixel_nm = cfg.pixel_size_nm or sizes.get("X")
    psf = camera_psf(psf_path, pixel_nm, cfg.psf_pixel_size_nm)
    pixel_nm = psf.pixel_size_nm[-1]
    acquisitions = []
    for path, stack in zip(cfg.images, stacks):
        acquisition = SIMAcquisition.prepare(stack, psf.data, cfg)
        click.echo(f"{Path(path).name}: {acquisition.describe()}", err=True)
        acquisitions.append(acquisition)
    first = acquisitions[0]
    sim_psf = effective_psf(first.params, psf.data, first.raw.shape[-2:], cfg.sim_wiener)
    fine = pixel_nm / 2
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_tiff(
            run_dir / "sim_reconstruction.tif",
            np.stack([a.reconstruction for a in acquisitions]),
            "TYX",
            {"X": fine, "Y": fine},
        )
        write_tiff(run_dir / "sim_psf.tif", sim_psf, "YX", {"X": fine, "Y": fine})
        with atomic_output(run_dir / "sim_parameters.json") as tmp:
            tmp.write_text(json.dumps([a.params.to_dict() for a in acquisitions], indent=1))
    sampler = SIMPairSampler(acquisitions, cfg, np.random.default_rng(cfg.seed))
    frames = [a.reconstruction for a in acquisitions]
    return frames, PSF(sim_psf, (fine, fine), f"SIM effective PSF of {psf.source}"), fine, sampler
