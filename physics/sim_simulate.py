"""Raw 2D-SIM acquisitions with ground truth (the widefield simulator, lit by stripes).

Each raw frame sees the ground truth multiplied by a sinusoidal illumination
``1 + m cos(2 pi k_a . r + phi_a + 2 pi p / n_phases)`` (angles ``a`` evenly spread over
180 degrees, phases ``p`` evenly spread over a period), then the same blur, pixel integration
and camera noise as :mod:`.simulate`. Frames are ordered angle-major: ``[a0p0, a0p1, a0p2,
a1p0, ...]``. Lengths in nm; the pattern frequency is a fraction of the detection cutoff
``2 NA / lambda``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from ..runtime.errors import InputError
from ..runtime.io import write_tiff
from .optics import pupil_psf
from .simulate import SimulationConfig, bin_pixels, fine_psf, ground_truth


@dataclass
class SIMPattern:
    """The illumination of a SIM acquisition (what reconstruction has to estimate).

    Attributes
    ----------
    k : list of (ky, kx)
        Pattern wave vector per angle, cycles per camera pixel.
    phase : list of float
        Phase of the first frame of each angle (radians).
    modulation : float
        Modulation depth ``m`` (0-1).
    phases : int
        Phase steps per angle (evenly spaced over one period).
    """

    k: list[tuple[float, float]]
    phase: list[float]
    modulation: float
    phases: int = 3

    @property
    def angles(self) -> int:
        return len(self.k)


@dataclass
class SIMSimulationConfig(SimulationConfig):
    """A widefield simulation plus the SIM illumination (``photons`` is per raw frame)."""

    angles: int = 3
    phases: int = 3
    modulation: float = 0.8
    #: pattern frequency as a fraction of the detection cutoff 2 NA / lambda
    pattern_fraction: float = 0.85
    first_angle_deg: float = 12.0
    pattern: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dims != 2:
            raise InputError("SIM simulation is 2D (--dims 2)")
        if self.angles < 1 or self.phases < 3:
            raise InputError("SIM needs at least 1 angle and 3 phases per angle")
        if not 0 < self.pattern_fraction < 1 or not 0 < self.modulation <= 1:
            raise InputError("pattern_fraction must be in (0, 1) and modulation in (0, 1]")


def make_pattern(cfg: SIMSimulationConfig, rng: np.random.Generator) -> SIMPattern:
    cutoff = 2 * cfg.na / cfg.wavelength_nm * cfg.pixel_nm  # cycles per camera pixel
    radius = cfg.pattern_fraction * cutoff
    ks, phases = [], []
    for a in range(cfg.angles):
        theta = np.deg2rad(cfg.first_angle_deg) + a * np.pi / cfg.angles
        ks.append((float(radius * np.sin(theta)), float(radius * np.cos(theta))))
        phases.append(float(rng.uniform(0, 2 * np.pi)))
    return SIMPattern(ks, phases, cfg.modulation, cfg.phases)


def simulate_sim(cfg: SIMSimulationConfig) -> dict:
    """Simulate one raw 2D-SIM acquisition.

    Returns
    -------
    dict
        ``raw`` (``[angles * phases, Y, X]`` uint16 ADU), ``psf`` (camera pixels, sum 1),
        ``gt`` (2x grid), ``widefield`` (the sum of the raw frames' clean photons, camera grid)
        and ``pattern`` (:class:`SIMPattern`, the truth).
    """
    rng = np.random.default_rng(cfg.seed)
    gt = ground_truth(cfg, rng)
    pattern = make_pattern(cfg, rng)
    cfg.pattern = asdict(pattern)
    psf = fine_psf(cfg, cfg.wavelength_nm)
    n = gt.shape[-1]
    # fine-grid coordinates in camera pixels, at fine pixel centres
    coords = (np.arange(n) - (cfg.oversample - 1) / 2) / cfg.oversample
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    clean = []
    for (ky, kx), phase0 in zip(pattern.k, pattern.phase):
        for p in range(cfg.phases):
            phase = phase0 + 2 * np.pi * p / cfg.phases
            light = 1 + cfg.modulation * np.cos(2 * np.pi * (ky * yy + kx * xx) + phase)
            blurred = fftconvolve(gt * light, psf, mode="same")
            clean.append(np.clip(bin_pixels(blurred, cfg.oversample), 0, None))
    clean = np.stack(clean)
    widefield = clean.mean(axis=0)
    foreground = widefield > 0.2 * np.percentile(widefield, 99.9)
    scale = cfg.photons / widefield[foreground].mean() if foreground.any() else 0.0
    photons = rng.poisson(clean * scale + cfg.background_photons).astype(np.float64)
    noisy = photons + rng.normal(0, cfg.read_noise_e, photons.shape) + cfg.offset_adu
    raw = np.clip(np.round(noisy), 0, 65535).astype(np.uint16)
    user_psf = pupil_psf(
        cfg.psf_size, cfg.pixel_nm, cfg.na, cfg.wavelength_nm, cfg.refractive_index
    )
    return {
        "raw": raw,
        "psf": user_psf[0],
        "gt": (bin_pixels(gt, cfg.oversample // 2) * scale).astype(np.float32),
        "widefield": (widefield * scale * len(clean)).astype(np.float32),
        "pattern": pattern,
    }


def write_sim_simulation(cfg: SIMSimulationConfig, folder: str | Path) -> dict[str, Path]:
    """Write ``raw.tif`` (the 9-frame stack), ``psf.tif``, ``gt.tif`` and ``params.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result = simulate_sim(cfg)
    camera = {"X": cfg.pixel_nm, "Y": cfg.pixel_nm}
    paths = {name: folder / f"{name}.tif" for name in ("raw", "psf", "gt")}
    write_tiff(paths["raw"], result["raw"], "TYX", camera)
    write_tiff(paths["psf"], result["psf"], "YX", camera)
    write_tiff(paths["gt"], result["gt"], "YX", {k: v / 2 for k, v in camera.items()})
    paths["params"] = folder / "params.json"
    paths["params"].write_text(json.dumps(asdict(cfg), indent=1))
    return paths
