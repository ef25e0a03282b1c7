"""Conventional 2D-SIM reconstruction (Gustafsson's generalised Wiener filter).

Written here because no maintained PyPI package does 2D-SIM with parameter estimation in a form
we can call (fairSIM and the reference use Java/MATLAB). Steps per pattern angle: upsample the
raw frames 2x by zero-padding their spectra; separate the three information bands (frame ``p``
holds ``C0 + e^{i 2 pi p/P} C+ + e^{-i 2 pi p/P} C-``); estimate the pattern wave vector as the
peak of the cross-correlation of ``C0`` and ``C+`` (integer peak, then sub-pixel refinement),
and the pattern phase and modulation by a least-squares fit of the shifted band against ``C0``
where they overlap; move the side bands to their true frequencies (phase ramps in real space,
so non-integer shifts are exact); combine all bands with the Wiener filter and an apodisation
to ``cutoff + |k|``.

Frequencies are in cycles per camera pixel (``(ky, kx)``); arrays ``[angles * phases, Y, X]``
(angle-major) in, ``[2Y, 2X]`` out, on a grid of half the camera pixel.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..runtime.errors import InputError, describe
from ..runtime.io import read_image
from .psf import PSF, read_psf, resample_psf

log = logging.getLogger(__name__)

#: OTF magnitude below which a frequency counts as outside the passband
OTF_FLOOR = 0.05


@dataclass
class SIMParameters:
    """Pattern parameters, estimated from the data (or known, for tests).

    Attributes
    ----------
    k : list of (ky, kx)
        Wave vector per angle (cycles per camera pixel).
    phase : list of float
        Phase of the first frame of each angle (radians).
    modulation : list of float
        Modulation depth per angle.
    phases : int
        Phase steps per angle.
    """

    k: list[tuple[float, float]]
    phase: list[float]
    modulation: list[float]
    phases: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


def _check_raw(raw: np.ndarray, phases: int) -> np.ndarray:
    raw = np.asarray(raw, np.float64)
    if raw.ndim != 3 or raw.shape[0] % phases or raw.shape[0] < phases:
        raise InputError(
            f"a raw 2D-SIM stack has angles x phases frames ([A*P, Y, X], angle-major); got "
            f"shape {raw.shape} with {phases} phases"
        )
    return raw


def _embed(spectrum: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Place a centred-at-0 spectrum into a larger grid (zero padding = band-limited upsample)."""
    big = np.zeros(shape, complex)
    h, w = spectrum.shape
    centred = np.fft.fftshift(spectrum)
    y0, x0 = shape[0] // 2 - h // 2, shape[1] // 2 - w // 2
    big[y0 : y0 + h, x0 : x0 + w] = centred
    return np.fft.ifftshift(big)


def otf_2x(psf: np.ndarray, camera_shape: tuple[int, int]) -> np.ndarray:
    """The detection OTF (``OTF(0) = 1``) on the 2x grid of a camera image of ``camera_shape``."""
    psf = np.asarray(psf, np.float64)
    if psf.ndim != 2 or psf.shape[0] > camera_shape[0] or psf.shape[1] > camera_shape[1]:
        raise InputError(f"the PSF ({psf.shape}) must be 2D and smaller than the image")
    padded = np.zeros(camera_shape)
    h, w = psf.shape
    y0, x0 = camera_shape[0] // 2 - h // 2, camera_shape[1] // 2 - w // 2
    padded[y0 : y0 + h, x0 : x0 + w] = psf / psf.sum()
    otf = np.fft.fft2(np.fft.ifftshift(padded))
    return _embed(otf, (2 * camera_shape[0], 2 * camera_shape[1]))


def _ramp(shape: tuple[int, int], k_index: tuple[float, float], kernel: bool = False) -> np.ndarray:
    """``exp(2 pi i k . r / N)`` on a grid: multiplying by it moves a spectrum by ``+k``.

    Image coordinates run ``0..N-1``; a kernel centred at index 0 (a PSF) has signed
    coordinates (``N-1`` is ``-1``), which matters for non-integer ``k``.
    """
    if kernel:
        y = np.fft.fftfreq(shape[0])[:, None]
        x = np.fft.fftfreq(shape[1])[None, :]
    else:
        y = np.arange(shape[0])[:, None] / shape[0]
        x = np.arange(shape[1])[None, :] / shape[1]
    return np.exp(2j * np.pi * (k_index[0] * y + k_index[1] * x))


def _bands(frames: np.ndarray, phases: int) -> list[np.ndarray]:
    """Separate ``C0, C+, C-`` (2x grid spectra) from one angle's phase frames."""
    big = (2 * frames.shape[-2], 2 * frames.shape[-1])
    spectra = [_embed(np.fft.fft2(f), big) for f in frames]
    steps = 2 * np.pi * np.arange(phases) / phases
    mixing = np.stack([np.ones(phases), np.exp(1j * steps), np.exp(-1j * steps)], axis=1)
    unmix = np.linalg.pinv(mixing)  # [3, P]
    return [sum(unmix[b, p] * spectra[p] for p in range(phases)) for b in range(3)]


def _index(k: tuple[float, float], camera_shape: tuple[int, int]) -> tuple[float, float]:
    """cycles per camera pixel -> frequency index on the 2x grid."""
    return k[0] * camera_shape[0], k[1] * camera_shape[1]


def _cutoff_index(otf: np.ndarray) -> float:
    fy = np.fft.fftfreq(otf.shape[0]) * otf.shape[0]
    fx = np.fft.fftfreq(otf.shape[1]) * otf.shape[1]
    radius = np.hypot(fy[:, None], fx[None, :])
    inside = np.abs(otf) > OTF_FLOOR
    return float(radius[inside].max())


class _Grid:
    """Frequency bookkeeping of the 2x grid of one camera image."""

    def __init__(self, psf: np.ndarray, camera: tuple[int, int]):
        self.camera = camera
        self.otf = otf_2x(psf, camera)
        self.shape = self.otf.shape
        self.fy = np.fft.fftfreq(self.shape[0]) * self.shape[0]
        self.fx = np.fft.fftfreq(self.shape[1]) * self.shape[1]
        self.radius = np.hypot(self.fy[:, None], self.fx[None, :])
        self.support = np.abs(self.otf) > OTF_FLOOR
        self.cutoff = _cutoff_index(self.otf)

    def at(self, index: tuple[int, int]) -> np.ndarray:
        return np.array([self.fy[index[0]], self.fx[index[1]]], float)

    def index(self, q: np.ndarray) -> tuple[int, int]:
        return int(round(q[0])) % self.shape[0], int(round(q[1])) % self.shape[1]


def _modulation_map(c0: np.ndarray, c1: np.ndarray, grid: _Grid) -> np.ndarray:
    """For every integer shift q: the modulation it would imply,
    ``|sum conj(C0 H_q) C+_q H| / sum |C0 H_q|^2`` (both sums are correlations: FFTs). The
    normalisation removes the bias towards small shifts, where the OTFs overlap most."""
    support, otf = grid.support, grid.otf
    a0 = np.where(support, c0 * otf, 0)
    a1 = np.where(support, c1 * otf, 0)
    numerator = np.abs(np.fft.fft2(np.conj(np.fft.fft2(a0)) * np.fft.fft2(a1)))
    power = np.where(support, np.abs(c0) ** 2, 0)
    weight = np.where(support, np.abs(otf) ** 2, 0)
    denominator = np.abs(np.fft.fft2(np.conj(np.fft.fft2(power)) * np.fft.fft2(weight)))
    ratio = numerator / np.maximum(denominator, 1e-12 * denominator.max())
    ratio = np.roll(ratio[::-1, ::-1], 1, axis=(0, 1))  # FFT-of-FFT puts shift q at -q
    # the pattern is inside the passband, and not so close to 0 that its bands coincide
    ratio[(grid.radius < 0.5 * grid.cutoff) | (grid.radius > 1.02 * grid.cutoff)] = 0
    return ratio


def _local_peak(ratio: np.ndarray, grid: _Grid, q: np.ndarray, reach: int = 2):
    """(value, q) of the largest ``ratio`` within ``reach`` of ``q`` (either sign of ``q``)."""
    best = (-1.0, q)
    for sign in (1, -1):
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                trial = sign * np.round(q) + (dy, dx)
                value = float(ratio[grid.index(trial)])
                if value > best[0]:
                    best = (value, trial)
    return best


def _coarse_peaks(maps: list[np.ndarray], grid: _Grid, even_angles: bool) -> list[np.ndarray]:
    """Integer wave vector per angle. With ``even_angles`` the angles are taken to be evenly
    spread over 180 degrees with one |k|: candidates of the first angle are scored together
    with the other angles' maps at the rotated positions (robust at low light, where one map
    alone can pick a peak of the sample's own spectrum)."""
    if not even_angles or len(maps) == 1:
        return [grid.at(np.unravel_index(int(np.argmax(m)), m.shape)) for m in maps]
    count = len(maps)
    candidates = np.argsort(maps[0].ravel())[-40:]
    best_total, best = -1.0, None
    for flat in candidates:
        q = grid.at(np.unravel_index(int(flat), maps[0].shape))
        for sense in (1, -1):
            total, picks = float(maps[0].ravel()[flat]), [q]
            for a in range(1, count):
                angle = sense * a * np.pi / count
                c, s = np.cos(angle), np.sin(angle)
                rotated = np.array([c * q[0] + s * q[1], -s * q[0] + c * q[1]])
                value, where = _local_peak(maps[a], grid, rotated)
                total += value
                picks.append(where)
            if total > best_total:
                best_total, best = total, picks
    return best


def _refine(c0: np.ndarray, c1: np.ndarray, grid: _Grid, q: np.ndarray) -> np.ndarray:
    """Sub-pixel wave vector: the maximum of the C0-C+ cross-correlation near ``q``."""
    s0 = np.fft.ifft2(np.where(grid.support, c0, 0))
    s1 = np.fft.ifft2(np.where(grid.support, c1, 0))
    product = s0 * np.conj(s1)
    yy = np.arange(grid.shape[0])[:, None] / grid.shape[0]
    xx = np.arange(grid.shape[1])[None, :] / grid.shape[1]

    def score(v: np.ndarray) -> float:
        return abs(np.sum(product * np.exp(2j * np.pi * (v[0] * yy + v[1] * xx))))

    step, best = 0.5, score(q)
    while step > 2e-3:  # shrinking 3x3 pattern search
        moved = False
        for dy in (-step, 0, step):
            for dx in (-step, 0, step):
                trial = q + (dy, dx)
                value = score(trial) if (dy or dx) else best
                if value > best:
                    best, q, moved = value, trial, True
        if not moved:
            step /= 2
    return q


def _phase_and_modulation(c0, c1, grid: _Grid, q: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(m / 2) e^{i phase}``: C+ moved to its true place against C0, where
    both are seen."""
    k = (-float(q[0]), -float(q[1]))
    moved = np.fft.fft2(np.fft.ifft2(c1) * _ramp(grid.shape, k))
    otf_shift = np.fft.fft2(np.fft.ifft2(grid.otf) * _ramp(grid.shape, k, True))
    overlap = grid.support & (np.abs(otf_shift) > OTF_FLOOR) & (grid.radius > 2)
    x = (c0 * otf_shift)[overlap]
    y = (moved * grid.otf)[overlap]
    # |C0|^2 carries the shot noise's flat power too, which would bias m low at low light:
    # measured beyond the passband (noise only) and taken out of the denominator
    camera_band = (np.abs(grid.fy[:, None]) < grid.shape[0] / 4) & (
        np.abs(grid.fx[None, :]) < grid.shape[1] / 4
    )
    outside = camera_band & (grid.radius > 1.1 * grid.cutoff)
    noise = float(np.mean(np.abs(c0[outside]) ** 2)) if outside.any() else 0.0
    signal = np.vdot(x, x).real - noise * float(np.sum(np.abs(otf_shift[overlap]) ** 2))
    coefficient = np.vdot(x, y) / max(signal, 0.1 * np.vdot(x, x).real, 1e-30)
    return float(np.angle(coefficient)), float(min(1.0, 2 * abs(coefficient)))


def estimate_parameters(
    raw: np.ndarray,
    psf: np.ndarray,
    phases: int = 3,
    background: float = 100.0,
    even_angles: bool = True,
) -> SIMParameters:
    """Estimate the pattern's wave vector, phase and modulation for every angle.

    Parameters
    ----------
    raw : numpy.ndarray
        ``[angles * phases, Y, X]`` raw frames (ADU), angle-major.
    psf : numpy.ndarray
        Detection PSF on the camera grid.
    phases : int
        Phase steps per angle (evenly spaced).
    background : float
        Camera offset to subtract (ADU).
    even_angles : bool
        The pattern angles are evenly spread over 180 degrees with one frequency (as in
        common 2D-SIM set-ups): used to find the pattern peaks jointly.
    """
    raw = _check_raw(raw, phases) - background
    grid = _Grid(psf, raw.shape[-2:])
    bands = [_bands(raw[a : a + phases], phases) for a in range(0, raw.shape[0], phases)]
    maps = [_modulation_map(c0, c1, grid) for c0, c1, _ in bands]
    ks, phase_list, mods = [], [], []
    for (c0, c1, _), q in zip(bands, _coarse_peaks(maps, grid, even_angles)):
        q = _refine(c0, c1, grid, q)
        phase, modulation = _phase_and_modulation(c0, c1, grid, q)
        ks.append((float(q[0]) / grid.camera[0], float(q[1]) / grid.camera[1]))
        phase_list.append(phase)
        mods.append(modulation)
    return SIMParameters(ks, phase_list, mods, phases)


def _half_pixel_back(shape) -> np.ndarray:
    """Spectral shift putting 2x-grid pixel ``i`` at camera coordinate ``i / 2 - 1/4``.

    Zero-padded upsampling puts it at ``i / 2``; the project's 2x grids (the runtime's output,
    the simulator's ground truth) centre their pixels a quarter camera pixel earlier.
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    return np.exp(-2j * np.pi * 0.5 * (fy + fx))


def _apodisation(shape, cutoff_index: float, k_max: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0]) * shape[0]
    fx = np.fft.fftfreq(shape[1]) * shape[1]
    radius = np.hypot(fy[:, None], fx[None, :])
    return np.clip(1 - radius / (cutoff_index + k_max), 0, None)


def _band_otfs(psf, params, camera):
    """The detection OTF on the 2x grid; per angle the OTFs of its two side bands moved by
    ``-k`` and ``+k`` as ``(sign, k index, weight m/2, OTF)``; and the apodisation."""
    otf = otf_2x(psf, camera)
    big = otf.shape
    h = np.fft.ifft2(otf)
    moved = []
    for k, m in zip(params.k, params.modulation):
        ki = _index(k, camera)
        for sign in (-1, 1):
            shifted = np.fft.fft2(h * _ramp(big, (sign * ki[0], sign * ki[1]), True))
            moved.append((sign, ki, max(m, 0.05) / 2, shifted))
    k_max = max(np.hypot(*_index(k, camera)) for k in params.k)
    return otf, moved, _apodisation(big, _cutoff_index(otf), k_max)


def _combined_bands(raw, psf, params):
    """Moved bands and their effective OTFs (all angles), on the 2x grid."""
    camera = raw.shape[-2:]
    otf, moved, apodisation = _band_otfs(psf, params, camera)
    bands, otfs = [], []
    p = params.phases
    for a, phase in enumerate(params.phase):
        c0, c1, c2 = _bands(raw[a * p : (a + 1) * p], p)
        bands.append(c0)
        otfs.append(otf)
        for (sign, ki, weight, shifted), band in zip(moved[2 * a : 2 * a + 2], (c1, c2)):
            ramp = _ramp(otf.shape, (sign * ki[0], sign * ki[1]))
            bands.append(np.fft.fft2(np.fft.ifft2(band) * ramp))
            otfs.append(weight * np.exp(-1j * sign * phase) * shifted)
    return bands, otfs, apodisation


def reconstruct(
    raw: np.ndarray,
    psf: np.ndarray,
    params: SIMParameters,
    wiener: float = 0.05,
    background: float = 100.0,
) -> np.ndarray:
    """Wiener-SIM reconstruction on the 2x grid (float32, in raw-frame intensity units).

    Parameters
    ----------
    raw : numpy.ndarray
        ``[angles * phases, Y, X]`` raw frames (ADU), angle-major.
    psf : numpy.ndarray
        Detection PSF on the camera grid.
    params : SIMParameters
        From :func:`estimate_parameters`.
    wiener : float
        Wiener constant (``w^2``, relative to the OTF's peak of 1): larger is smoother.
    background : float
        Camera offset to subtract (ADU).
    """
    raw = _check_raw(raw, params.phases) - background
    bands, otfs, apod = _combined_bands(raw, psf, params)
    numerator = sum(np.conj(o) * b for o, b in zip(otfs, bands))
    denominator = sum(np.abs(o) ** 2 for o in otfs) + wiener
    image = np.fft.ifft2(numerator / denominator * apod * _half_pixel_back(apod.shape)).real
    return (4 * image).astype(np.float32)  # 4: zero-padded spectra on a 4x larger grid


def effective_psf(
    params: SIMParameters,
    psf: np.ndarray,
    camera_shape: tuple[int, int],
    wiener: float = 0.05,
    size: int = 31,
) -> np.ndarray:
    """The PSF of the reconstruction (2x grid, ``size x size``, sum 1): what the Wiener filter
    and apodisation leave of a point, used as the SIM PSF in the ZS-DeconvNet-SIM loss."""
    camera = tuple(int(s) for s in camera_shape)
    otf, moved, apodisation = _band_otfs(psf, params, camera)
    big = otf.shape
    total = np.abs(otf) ** 2 * len(params.k)
    for _, _, weight, shifted in moved:
        total = total + weight**2 * np.abs(shifted) ** 2
    transfer = total / (total + wiener) * apodisation
    point = np.fft.fftshift(np.fft.ifft2(transfer).real)
    cy, cx = big[0] // 2, big[1] // 2
    half = size // 2
    crop = point[cy - half : cy + half + 1, cx - half : cx + half + 1]
    return (crop / crop.sum()).astype(np.float32)


def widefield(raw: np.ndarray, phases: int = 3, background: float = 100.0) -> np.ndarray:
    """The widefield image hidden in a SIM stack: the mean of its frames (camera grid)."""
    return (_check_raw(raw, phases) - background).mean(axis=0).astype(np.float32)


def load_sim_stack(path: Path, phases: int, channel: int | None = None) -> tuple[np.ndarray, dict]:
    """One raw SIM acquisition ``[angles * phases, Y, X]`` (float32 ADU) and its pixel sizes."""
    image = read_image(path, memmap=False)
    data, axes = np.asarray(image.data, np.float32), image.axes
    if "C" in axes:
        data = np.take(data, channel or 0, axis=axes.index("C"))
        axes = axes.replace("C", "")
    data = data.reshape(-1, *data.shape[-2:])
    if data.shape[0] < phases or data.shape[0] % phases:
        raise InputError(
            f"{describe(path)} has {data.shape[0]} frames; a raw 2D-SIM acquisition has "
            f"angles x phases frames ({phases} phases per angle, angle-major)"
        )
    if not np.isfinite(data).all():
        raise InputError(f"{describe(path)} contains NaN or Inf pixels; clean the data")
    return data, image.pixel_size_nm


def camera_psf(psf_path: Path, pixel_nm: float | None, psf_pixel_nm: float | None) -> PSF:
    """The detection PSF resampled to the camera pixel (what reconstruction needs)."""
    psf = read_psf(psf_path, 2, pixel_size_nm=psf_pixel_nm or None)
    if pixel_nm is None:
        pixel_nm = psf.pixel_size_nm[-1]
        log.warning("no pixel size in the raw file: assuming the PSF's, %.4g nm", pixel_nm)
    return resample_psf(psf, (pixel_nm, pixel_nm))
