"""What a pretrained prior is trained on: simulated acquisitions over a broad distribution.

The prior is trained with the zero-shot loss itself (recorrupted pairs of each noisy image,
re-blurred by that image's own PSF): no ground truth is used, so it stays the paper's
self-supervised method, started from somewhere better than random weights. Each acquisition
draws a structure class, optics (NA, wavelength, and a camera pixel chosen so that the PSF's
width in camera pixels lies in a set range), photons, background, read noise, camera offset
and density from :class:`PriorDistribution`. Arrays are ``YX``; lengths in nm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..physics.optics import pupil_psf
from ..physics.psf import check_psf, fwhm_px
from ..physics.simulate import GAIN, SimulationConfig, simulate
from .config import TrainConfig
from .data2d import PatchSampler
from .trainer import sr_psf


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


#: sigma of a widefield PSF ~ 0.21 wavelength / NA (Gaussian fit to the Airy core)
SIGMA_PER_LAMBDA_OVER_NA = 0.21


@dataclass(frozen=True)
class PriorDistribution:
    """Ranges the prior's simulated acquisitions are drawn from (uniform unless *log*).

    ``sigma_camera_px``: the PSF's standard deviation in camera pixels (log-uniform); the pixel
    size follows from it and the drawn NA and wavelength. 0.38-1.9 camera px spans 2x
    undersampled (a 20x/0.75 objective on 6.5 um camera pixels: 325 nm, sigma 0.40 px at 460 nm)
    through Nyquist sampling (0.84 px) to about 2x oversampled (NA 1.49 / 525 nm on 40 nm
    pixels); with NA 1.49 / 525 nm that is 40-195 nm pixels.
    """

    # "empty" fields (background and noise only) teach the prior that noise alone restores
    # to a flat image; without them it drew texture into pure noise (RESULTS.md)
    structures: tuple[str, ...] = ("filaments", "puncta", "mixed", "beads", "nuclei", "empty")
    na: tuple[float, float] = (0.9, 1.49)
    wavelength_nm: tuple[float, float] = (450.0, 680.0)
    sigma_camera_px: tuple[float, float] = (0.38, 1.9)
    photons: tuple[float, float] = (2.0, 100.0)  # log
    background_photons: tuple[float, float] = (0.5, 30.0)  # log
    read_noise_e: tuple[float, float] = (0.5, 3.0)
    offset_adu: tuple[float, float] = (0.0, 500.0)
    density: tuple[float, float] = (0.4, 2.0)  # log
    size: int = 192  # camera pixels per side

    def draw(self, rng: np.random.Generator) -> SimulationConfig:
        """One acquisition's simulation parameters."""
        na = float(rng.uniform(*self.na))
        wavelength = float(rng.uniform(*self.wavelength_nm))
        sigma_px = _log_uniform(rng, *self.sigma_camera_px)
        pixel_nm = SIGMA_PER_LAMBDA_OVER_NA * wavelength / na / sigma_px
        return SimulationConfig(
            structure=str(rng.choice(self.structures)),
            size=self.size,
            photons=_log_uniform(rng, *self.photons),
            pixel_nm=pixel_nm,
            na=na,
            wavelength_nm=wavelength,
            refractive_index=max(1.33, na + 0.03),
            background_photons=_log_uniform(rng, *self.background_photons),
            read_noise_e=float(rng.uniform(*self.read_noise_e)),
            offset_adu=float(rng.uniform(*self.offset_adu)),
            # no ground truth is needed: the SR grid suffices unless it undersamples the PSF
            oversample=2 if sigma_px >= 1.0 else 4,
            psf_size=2 * int(math.ceil(4 * sigma_px * 2)) + 1,
            density=_log_uniform(rng, *self.density),
            seed=int(rng.integers(2**31)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def fwhm_range(dist: PriorDistribution, cfg: TrainConfig) -> tuple[float, float]:
    """The FWHM on the output grid (px) of the narrowest and widest PSF the distribution draws:
    the range a prior accepts. Measured as training measures the user's PSF (camera-pixel pupil
    PSF, resampled onto the output grid); in pixels it depends on sigma alone, not on which NA
    and wavelength give it."""
    na, wavelength = 1.2, 550.0
    widths = []
    for sigma_px in dist.sigma_camera_px:
        pixel_nm = SIGMA_PER_LAMBDA_OVER_NA * wavelength / na / sigma_px
        size = 2 * int(math.ceil(8 * sigma_px)) + 1
        data = pupil_psf(size, pixel_nm, na, wavelength, na + 0.03)[0]
        psf = check_psf(data, (pixel_nm, pixel_nm), 2)
        widths.append(round(fwhm_px(sr_psf(psf, pixel_nm, cfg).data), 3))
    return widths[0], widths[1]


class Acquisition:
    """One simulated noisy image with its PSF and a pair sampler over it."""

    def __init__(self, sim: SimulationConfig, cfg: TrainConfig, rng: np.random.Generator):
        images = simulate(sim)
        self.sim = sim
        self.psf = check_psf(images["psf"], (sim.pixel_nm, sim.pixel_nm), 2)
        self.noisy = images["noisy"].astype(np.float32)
        # the simulated camera's gain is known: no need to measure it per acquisition
        self.sampler = PatchSampler([self.noisy], cfg.replace(gain=GAIN), rng)
        self.kernel = sr_psf(self.psf, sim.pixel_nm, cfg).data
        self.fwhm_sr = fwhm_px(self.kernel)  # the width a prior's range is stated in

    def summary(self) -> dict:
        """What the model card counts: structure, PSF width on the output grid, photons."""
        return {
            "structure": self.sim.structure,
            "fwhm_sr_px": round(self.fwhm_sr, 3),
            "photons": round(self.sim.photons, 2),
            "pixel_nm": round(self.sim.pixel_nm, 1),
        }


class PriorSampler:
    """Training pairs from a rolling pool of simulated acquisitions, each with its own PSF.

    Every batch takes its samples from distinct acquisitions; after every ``refresh_every``
    batches one acquisition of the pool is replaced by a fresh one (simulating one costs about
    a third of a CPU training step), so a run of ``n`` steps sees ``n / refresh_every`` images.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        rng: np.random.Generator,
        dist: PriorDistribution,
        pool: int = 16,
        refresh_every: int = 2,
    ):
        self.refresh_every = refresh_every
        self.batches = 0
        self.cfg, self.rng, self.dist = cfg, rng, dist
        self.pool = [Acquisition(dist.draw(rng), cfg, rng) for _ in range(pool)]
        self.next_replace = 0
        self.drawn = [acq.summary() for acq in self.pool]
        self.noise = []  # one noise model per image: logged by the trainer (none here)
        self.ranges = self.pool[0].sampler.ranges

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, list[Acquisition]]:
        """``n`` normalised pairs ``[n, 1, P, P]`` (input, target) and their acquisitions."""
        chosen = [self.pool[i] for i in self.rng.choice(len(self.pool), n, replace=False)]
        pairs = []
        for acq in chosen:
            acq.sampler.rng = self.rng
            pairs.append(acq.sampler.pair())
        self.batches += 1
        if self.batches % self.refresh_every == 0:
            fresh = Acquisition(self.dist.draw(self.rng), self.cfg, self.rng)
            self.pool[self.next_replace] = fresh
            self.drawn.append(fresh.summary())
            self.next_replace = (self.next_replace + 1) % len(self.pool)
        x = np.stack([a for a, _ in pairs])[:, None]
        y = np.stack([b for _, b in pairs])[:, None]
        return x, y, chosen
