"""A widefield fluorescence simulator with ground truth, for measuring quality honestly.

Image formation: a ground-truth structure is drawn on a fine grid (``oversample`` times finer
than the camera), blurred by a physical PSF computed on that grid, integrated onto camera pixels,
scaled to a mean photon count on the structure, and corrupted by Poisson shot noise, a
background, Gaussian read noise and a camera offset (sCMOS, gain 1 ADU per photo-electron).

Outputs (see :func:`simulate`): the noisy camera image, the PSF sampled as a user would hand it
over (camera pixels, odd size), the ground truth on the 2x super-resolution grid, and the
*reference*: what a microscope with a 2x narrower PSF would see on that grid, the target a
1.5-2x resolution method should approach. Lengths in nm; arrays ``YX`` or ``ZYX``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from ..runtime.errors import InputError
from ..runtime.io import write_tiff
from .optics import pupil_psf, z_positions

#: The simulated camera's gain (ADU per photo-electron)
GAIN = 1.0

STRUCTURES = ("filaments", "puncta", "mixed", "beads", "sheets", "nuclei", "membranes", "empty")
#: Structures drawn in 2D only (sheets need a volume; nuclei and cell outlines are drawn flat)
FLAT_ONLY = ("nuclei", "membranes")


@dataclass
class SimulationConfig:
    """Parameters of one simulated acquisition (lengths in nm)."""

    structure: str = "mixed"
    dims: int = 2
    size: int = 256
    z_size: int = 32
    photons: float = 10.0
    pixel_nm: float = 62.6
    z_step_nm: float = 160.0
    na: float = 1.49
    wavelength_nm: float = 525.0
    refractive_index: float = 1.518
    background_photons: float = 2.0
    read_noise_e: float = 1.5
    offset_adu: float = 100.0
    oversample: int = 4
    psf_size: int = 31
    density: float = 1.0
    seed: int = 0
    bead_positions_sr: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise InputError(f"unknown structure {self.structure!r}; choose from {STRUCTURES}")
        if self.dims not in (2, 3):
            raise InputError(f"--dims must be 2 or 3, got {self.dims}")
        if self.structure == "sheets" and self.dims == 2:
            raise InputError("sheets are a 3D structure; use --dims 3")
        if self.structure in FLAT_ONLY and self.dims == 3:
            raise InputError(f"{self.structure} are drawn in 2D only; use --dims 2")
        if self.oversample % 2 or self.oversample < 2:
            raise InputError("oversample must be an even number >= 2 (the SR grid is 2x)")
        if self.photons <= 0 or self.size < 16:
            raise InputError("photons must be positive and size at least 16 pixels")


# -- structures on the fine grid -------------------------------------------------------------


def _draw(canvas: np.ndarray, points: np.ndarray, weight: float = 1.0) -> None:
    """Deposit points (fine-grid coordinates, one row per point) with linear splatting."""
    shape = np.array(canvas.shape)
    keep = np.all((points >= 0) & (points <= shape - 1.001), axis=1)
    points = points[keep]
    base = np.floor(points).astype(int)
    frac = points - base
    for corner in np.ndindex(*(2,) * canvas.ndim):
        c = np.array(corner)
        w = np.prod(np.where(c, frac, 1 - frac), axis=1) * weight
        np.add.at(canvas, tuple((base + c).T), w)


def _curves(rng, shape, n, step, length_px, persistence) -> list[np.ndarray]:
    """Smooth random curves (worm-like chains) inside ``shape``."""
    dims = len(shape)
    curves = []
    for _ in range(n):
        pos = rng.uniform(0, 1, dims) * (np.array(shape) - 1)
        direction = rng.normal(size=dims)
        if dims == 3:
            direction[0] *= 0.3  # filaments lie mostly in the lateral plane
        direction /= np.linalg.norm(direction)
        points = []
        for _ in range(int(length_px / step)):
            points.append(pos.copy())
            direction = direction + rng.normal(size=dims) * step / persistence
            if dims == 3:
                direction[0] *= 0.9
            direction /= np.linalg.norm(direction)
            pos = pos + direction * step
        curves.append(np.array(points))
    return curves


def _nuclei(canvas: np.ndarray, rng, n: int, fine_nm: float) -> None:
    """Filled ellipses (nuclei, vesicles: 0.4-3 um radius) with a chromatin-like texture."""
    size = canvas.shape[0]
    for _ in range(n):
        radius = math.exp(rng.uniform(math.log(400), math.log(3000))) / fine_nm
        axes = radius * np.array([1.0, rng.uniform(0.6, 1.0)])
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, size - 1, 2)
        lo = np.clip(np.floor([cy - radius, cx - radius]).astype(int), 0, size)
        hi = np.clip(np.ceil([cy + radius, cx + radius]).astype(int) + 1, 0, size)
        if np.any(hi <= lo):
            continue
        yy, xx = np.mgrid[lo[0] : hi[0], lo[1] : hi[1]]
        u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
        v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
        inside = (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1
        texture = gaussian_filter(rng.normal(size=inside.shape), 150 / fine_nm)
        texture /= texture.std() + 1e-12
        fill = 0.08 * np.clip(1 + 0.4 * texture, 0.2, None) * inside
        canvas[lo[0] : hi[0], lo[1] : hi[1]] += fill


def _outlines(rng, size: int, n: int, fine_nm: float) -> list[np.ndarray]:
    """Closed wavy loops (cell membranes seen in one plane: 1-4 um radius)."""
    loops = []
    for _ in range(n):
        radius = rng.uniform(1000, 4000) / fine_nm
        centre = rng.uniform(0, size - 1, 2)
        theta = np.arange(0, 2 * np.pi, 0.5 / radius)
        wobble = sum(
            rng.normal(0, 0.07) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)
        )
        r = radius * (1 + wobble)
        loops.append(centre + np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
    return loops


def ground_truth(cfg: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    fine_nm = cfg.pixel_nm / cfg.oversample
    lateral = cfg.size * cfg.oversample
    shape = (lateral, lateral) if cfg.dims == 2 else (cfg.z_size, lateral, lateral)
    gt = np.zeros(shape, np.float64)
    area_um2 = (cfg.size * cfg.pixel_nm / 1e3) ** 2
    z_scale = np.array([cfg.z_step_nm / fine_nm, 1, 1]) if cfg.dims == 3 else np.ones(2)
    persistence = 1500 / fine_nm  # microtubule-like stiffness over the field (fine px)

    def deposit(points_nm_grid: np.ndarray, weight: float) -> None:
        _draw(gt, points_nm_grid / z_scale, weight)

    structure = cfg.structure
    if structure in ("filaments", "mixed"):
        n = max(1, int(round(0.12 * area_um2 * cfg.density)))
        for curve in _curves(rng, np.array(shape) * z_scale, n, 0.5, lateral * 1.5, persistence):
            deposit(curve, 1.0)
    if structure in ("puncta", "mixed"):
        n = max(1, int(round(0.35 * area_um2 * cfg.density)))
        for _ in range(n):
            centre = rng.uniform(0, 1, len(shape)) * (np.array(shape) - 1) * z_scale
            radius = rng.uniform(40, 90) / fine_nm
            if rng.random() < 0.5:  # CCP-like ring
                angles = np.linspace(0, 2 * np.pi, int(2 * np.pi * radius * 2), endpoint=False)
                ring = np.zeros((angles.size, len(shape)))
                ring[:, -1], ring[:, -2] = np.cos(angles) * radius, np.sin(angles) * radius
                deposit(centre + ring, 1.2)
            else:  # punctum: a small Gaussian cloud
                cloud = rng.normal(scale=radius / 2, size=(int(40 * radius), len(shape)))
                if cfg.dims == 3:
                    cloud[:, 0] *= 0.5
                deposit(centre + cloud, 0.6)
    if structure == "sheets":
        n = max(1, int(round(0.02 * area_um2 * cfg.density)))
        for _ in range(n):
            centre = rng.uniform(0.2, 0.8, 3) * (np.array(shape) - 1) * z_scale
            u, v = np.linalg.qr(rng.normal(size=(3, 2)))[0].T
            extent = rng.uniform(0.6, 1.5) * 1e3 / fine_nm
            s, t = np.meshgrid(np.arange(-extent, extent, 0.7), np.arange(-extent, extent, 0.7))
            keep = (s / extent) ** 2 + (t / extent) ** 2 < 1
            patch = centre + s[keep, None] * u + t[keep, None] * v
            deposit(patch, 0.35)
        for curve in _curves(rng, np.array(shape) * z_scale, 2 * n, 0.5, lateral, persistence):
            deposit(curve, 1.0)
    if structure == "nuclei":
        _nuclei(gt, rng, max(1, int(round(0.04 * area_um2 * cfg.density))), fine_nm)
    if structure == "membranes":
        for loop in _outlines(
            rng, lateral, max(1, int(round(0.03 * area_um2 * cfg.density))), fine_nm
        ):
            deposit(loop, 1.0)
    # "empty": no structure at all, background and camera noise only (a blank field of view)
    if structure == "beads":
        spacing = int(round(1200 / fine_nm))
        margin = spacing // 2
        positions = []
        for y in range(margin, lateral - margin + 1, spacing):
            for x in range(margin, lateral - margin + 1, spacing):
                jitter = rng.uniform(-0.15, 0.15, 2) * spacing
                point = [y + jitter[0], x + jitter[1]]
                if cfg.dims == 3:
                    point = [rng.uniform(0.35, 0.65) * (shape[0] - 1)] + point
                positions.append(point)
        positions = np.array(positions)
        _draw(gt, positions, 1.0)
        # bead centres on the SR grid (pixel-centre coordinates)
        factor = np.array([1, cfg.oversample / 2, cfg.oversample / 2][-len(shape) :])
        offset = np.array([0, (cfg.oversample / 2 - 1) / 2, (cfg.oversample / 2 - 1) / 2])
        cfg.bead_positions_sr = ((positions - offset[-len(shape) :]) / factor).round(3).tolist()
    return gt


# -- image formation ---------------------------------------------------------------------------


#: The 3D widefield microscope of the benchmarks (quality3d.py, adaptation.py --mode 3d,
#: beads3d_loss.py): water objective NA 1.1, 92.6 nm camera pixels, 160 nm z steps.
WIDEFIELD_3D = dict(
    dims=3,
    pixel_nm=92.6,
    z_step_nm=160.0,
    na=1.1,
    refractive_index=1.33,
    oversample=2,
    psf_size=21,
)


def bin_pixels(array: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor x factor`` blocks in y and x (light integrates over a pixel)."""
    *lead, h, w = array.shape
    return array.reshape(*lead, h // factor, factor, w // factor, factor).sum(axis=(-3, -1))


def fine_psf(cfg: SimulationConfig, wavelength_nm: float) -> np.ndarray:
    fine_nm = cfg.pixel_nm / cfg.oversample
    half = int(math.ceil(6 * wavelength_nm / cfg.na / fine_nm))
    z = z_positions(2 * (cfg.z_size // 2) + 1, cfg.z_step_nm) if cfg.dims == 3 else None
    psf = pupil_psf(2 * half + 1, fine_nm, cfg.na, wavelength_nm, cfg.refractive_index, z, 1)
    return psf[0] if cfg.dims == 2 else psf


def simulate(cfg: SimulationConfig) -> dict[str, np.ndarray]:
    """Simulate one acquisition.

    Returns
    -------
    dict
        ``noisy`` (camera ADU, uint16), ``psf`` (camera pixels, float32, sum 1), ``gt`` and
        ``reference`` (2x super-resolution grid, float32), ``clean`` (noise-free camera
        photons, float32).
    """
    rng = np.random.default_rng(cfg.seed)
    gt = ground_truth(cfg, rng)
    blurred = fftconvolve(gt, fine_psf(cfg, cfg.wavelength_nm), mode="same")
    sharp = fftconvolve(gt, fine_psf(cfg, cfg.wavelength_nm / 2), mode="same")
    camera = np.clip(bin_pixels(blurred, cfg.oversample), 0, None)
    foreground = camera > 0.2 * np.percentile(camera, 99.9)
    # photons per foreground pixel; an empty field has no foreground and no signal
    scale = cfg.photons / camera[foreground].mean() if foreground.any() else 0.0
    clean = camera * scale
    photons = rng.poisson(clean + cfg.background_photons).astype(np.float64)
    noisy = photons + rng.normal(0, cfg.read_noise_e, photons.shape) + cfg.offset_adu
    noisy = np.clip(np.round(noisy), 0, 65535).astype(np.uint16)
    sr = cfg.oversample // 2
    z = z_positions(cfg.psf_size if cfg.dims == 3 else 1, cfg.z_step_nm) if cfg.dims == 3 else None
    user_psf = pupil_psf(
        cfg.psf_size, cfg.pixel_nm, cfg.na, cfg.wavelength_nm, cfg.refractive_index, z
    )
    return {
        "noisy": noisy,
        "psf": user_psf[0] if cfg.dims == 2 else user_psf,
        "gt": (bin_pixels(gt, sr) * scale).astype(np.float32),
        "reference": np.clip(bin_pixels(sharp, sr) * scale, 0, None).astype(np.float32),
        "clean": clean.astype(np.float32),
    }


def write_simulation(cfg: SimulationConfig, folder: str | Path) -> dict[str, Path]:
    """Simulate and write ``noisy.tif``, ``psf.tif``, ``gt.tif``, ``reference.tif``,
    ``clean.tif`` and ``params.json`` (all TIFFs carry pixel sizes) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = simulate(cfg)
    camera = {"X": cfg.pixel_nm, "Y": cfg.pixel_nm, "Z": cfg.z_step_nm}
    sr = {"X": cfg.pixel_nm / 2, "Y": cfg.pixel_nm / 2, "Z": cfg.z_step_nm}
    axes = "YX" if cfg.dims == 2 else "ZYX"
    paths = {}
    for name, sizes in (
        ("noisy", camera),
        ("psf", camera),
        ("clean", camera),
        ("gt", sr),
        ("reference", sr),
    ):
        paths[name] = folder / f"{name}.tif"
        write_tiff(paths[name], images[name], axes, sizes)
    paths["params"] = folder / "params.json"
    paths["params"].write_text(json.dumps(asdict(cfg), indent=1))
    return paths
