"""Reading, checking and resampling a PSF (measured or generated).

A PSF is ``YX`` or ``ZYX``, odd-sized, peak at the centre, non-negative, summing to 1, with a
known pixel size (nm). :func:`check_psf` refuses what cannot be trusted with one sentence that
says how to fix it, and repairs (with a logged warning) what is safe to repair: a camera
background, small negative values, a peak a few pixels off centre, a 3D PSF given for 2D data.

Numpy only (the runtime's dependencies): resampling is separable Fourier interpolation with
an explicit DFT, exact for a band-limited PSF.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from ..runtime.errors import InputError, describe
from ..runtime.io import read_image

log = logging.getLogger(__name__)


@dataclass
class PSF:
    """A checked PSF.

    Attributes
    ----------
    data : numpy.ndarray
        ``YX`` or ``ZYX`` float32, odd sizes, peak at the centre, sum 1.
    pixel_size_nm : tuple of float
        Pixel size per axis (nm), same order as ``data``.
    source : str
        Where it came from (file name or description).
    """

    data: np.ndarray
    pixel_size_nm: tuple[float, ...]
    source: str = ""

    @property
    def ndim(self) -> int:
        return self.data.ndim


def read_psf(
    path: str | os.PathLike,
    ndim: int,
    pixel_size_nm: float | None = None,
    z_step_nm: float | None = None,
) -> PSF:
    """Read a PSF TIFF and check it for ``ndim``-dimensional data.

    Pixel sizes come from the file's metadata, else from ``pixel_size_nm`` / ``z_step_nm``.
    Given options override the file.
    """
    image = read_image(path, memmap=False)
    data = np.asarray(image.data, dtype=np.float64)
    data = np.squeeze(data)
    if data.ndim not in (2, 3):
        raise InputError(
            f"PSF {describe(path)} has shape {image.data.shape}; a PSF must be one plane (YX) "
            "or one stack (ZYX)"
        )
    xy = pixel_size_nm or image.pixel_size_nm.get("X")
    if xy is None:
        raise InputError(
            f"PSF {describe(path)} has no pixel size in its metadata; give --psf-pixel-size (nm)"
        )
    sizes: tuple[float, ...] = (xy, xy)
    if data.ndim == 3:
        z = z_step_nm or image.pixel_size_nm.get("Z")
        if z is None and ndim == 3:
            raise InputError(
                f"PSF {describe(path)} has no z step in its metadata; give --psf-z-step (nm)"
            )
        sizes = (z or xy, xy, xy)
    return check_psf(data, sizes, ndim, source=f"PSF {describe(path)}")


def check_psf(
    data: np.ndarray, pixel_size_nm: tuple[float, ...], ndim: int, source: str = "PSF"
) -> PSF:
    """Validate (and safely repair) a PSF array for ``ndim``-dimensional data.

    Raises
    ------
    InputError
        Even size, empty, NaN/Inf, far off-centre, or 2D PSF for 3D data.
    """
    data = np.asarray(data, dtype=np.float64)
    if not np.isfinite(data).all():
        raise InputError(f"{source} contains NaN or Inf values; regenerate or re-measure it")
    if data.ndim == 3 and ndim == 2:
        plane = int(np.argmax(data.reshape(data.shape[0], -1).max(axis=1)))
        log.warning("%s is 3D; using its in-focus plane %d for 2D data", source, plane)
        data, pixel_size_nm = data[plane], tuple(pixel_size_nm[-2:])
    if data.ndim != ndim:
        raise InputError(
            f"{source} is {data.ndim}D but the data is {ndim}D; give a "
            f"{'ZYX stack (zsdeconvnet psf --z-size ...)' if ndim == 3 else 'single plane'}"
        )
    if any(s % 2 == 0 for s in data.shape):
        shape = "x".join(map(str, data.shape))
        raise InputError(
            f"{source} has even size {shape}; an odd size centred on the peak is required "
            "(crop or pad it by one pixel)"
        )
    border = np.concatenate([np.moveaxis(data, a, 0)[[0, -1]].ravel() for a in range(data.ndim)])
    background = float(np.median(border))
    peak = float(data.max())
    if peak <= 0 or peak - background <= 0:
        raise InputError(f"{source} is empty (no positive peak); check the file")
    if abs(background) > 0.01 * peak:
        log.warning("%s: subtracting a background of %.3g (border median)", source, background)
        data = data - background
    if data.min() < 0:
        if data.min() < -0.05 * data.max():
            log.warning("%s has large negative values; clipping them to zero", source)
        data = np.clip(data, 0, None)
    data = _recentre(data, source)
    total = data.sum()
    if not total > 0:
        raise InputError(f"{source} is empty after background removal; check the file")
    return PSF((data / total).astype(np.float32), tuple(float(p) for p in pixel_size_nm), source)


def _recentre(data: np.ndarray, source: str) -> np.ndarray:
    peak = np.unravel_index(int(np.argmax(data)), data.shape)
    centre = tuple(s // 2 for s in data.shape)
    shift = tuple(c - p for c, p in zip(centre, peak))
    if not any(shift):
        return data
    if any(abs(d) > s // 4 for d, s in zip(shift, data.shape)):
        raise InputError(
            f"{source} has its peak at {tuple(map(int, peak))}, far from the centre {centre}; "
            "crop it around the bead so the peak is at the centre"
        )
    log.warning("%s: peak %s moved to the centre %s", source, tuple(map(int, peak)), centre)
    out = np.zeros_like(data)
    src = tuple(slice(max(0, -d), s - max(0, d)) for d, s in zip(shift, data.shape))
    dst = tuple(slice(max(0, d), s - max(0, -d)) for d, s in zip(shift, data.shape))
    out[dst] = data[src]
    return out


def _resample_line(
    values: np.ndarray, old: float, new: float, n_new: int, integrate: bool
) -> np.ndarray:
    """Band-limited (Fourier) resampling of one centred line from pitch ``old`` to ``new``.

    With ``integrate``, the camera-pixel integration is exchanged too: the spectrum is divided
    by the old pixel's box transform and multiplied by the new one's (``sinc(k p)``), so a PSF
    recorded with 62.6 nm pixels becomes the PSF a 31.3 nm pixel would record, not a blurrier
    copy. Numpy only; lines are short (tens of samples), so an explicit DFT matrix is cheap.
    """
    n = values.size
    x_old = (np.arange(n) - n // 2) * old
    x_new = (np.arange(n_new) - n_new // 2) * new
    k = np.fft.fftfreq(n, d=old)  # cycles per nm
    spectrum = np.exp(-2j * np.pi * np.outer(k, x_old)) @ values
    if integrate:
        spectrum = spectrum * np.sinc(k * new) / np.sinc(k * old)
    line = (np.exp(2j * np.pi * np.outer(x_new, k)) @ spectrum).real / n
    return line


def resample_psf(
    psf: PSF,
    pixel_size_nm: tuple[float, ...],
    max_size: int | None = None,
    integrate: tuple[bool, ...] | None = None,
) -> PSF:
    """Resample to another grid (e.g. the super-resolution grid, half the camera pixel).

    The PSF is band-limited (sampled finer than lambda / 4NA), so Fourier resampling is exact up
    to truncation; lateral axes also exchange the pixel-integration box (see
    :func:`_resample_line`), the z axis (plane samples) does not. The centre stays on the centre
    pixel, the output size is odd, negative ripples are clipped, and the sum is 1.
    """
    if len(pixel_size_nm) != psf.ndim:
        raise InputError(f"{psf.source}: need {psf.ndim} pixel sizes, got {pixel_size_nm}")
    if integrate is None:
        integrate = (False,) * (psf.ndim - 2) + (True, True)
    data = psf.data.astype(np.float64)
    for axis, (old, new) in enumerate(zip(psf.pixel_size_nm, pixel_size_nm)):
        half = int(np.floor((data.shape[axis] // 2) * old / new + 1e-9))
        if max_size is not None:
            half = min(half, max_size // 2)
        data = np.apply_along_axis(
            _resample_line, axis, data, old, new, 2 * half + 1, integrate[axis]
        )
    data = np.clip(data, 0, None)
    return PSF((data / data.sum()).astype(np.float32), tuple(pixel_size_nm), psf.source)


def psf_sigma_px(psf: PSF) -> tuple[float, ...]:
    """Standard deviation of the PSF along each axis (pixels), from second moments."""
    sigmas = []
    for axis in range(psf.ndim):
        profile = psf.data.sum(axis=tuple(a for a in range(psf.ndim) if a != axis))
        x = np.arange(profile.size) - profile.size // 2
        sigmas.append(float(np.sqrt(max((profile * x**2).sum() / profile.sum(), 0.25))))
    return tuple(sigmas)


def fwhm_px(data: np.ndarray) -> float:
    """Full width at half maximum of a 2D PSF (pixels), the mean of the row and the column
    through its peak, half-maximum crossings interpolated linearly. Unlike second moments it
    does not grow with the crop size (Airy rings, a measured PSF's noisy border)."""
    data = np.asarray(data, np.float64)
    py, px = np.unravel_index(int(np.argmax(data)), data.shape)
    widths = []
    for line, centre in ((data[py, :], px), (data[:, px], py)):
        half = line[centre] / 2
        left, right = centre, centre
        while left > 0 and line[left - 1] > half:
            left -= 1
        while right < line.size - 1 and line[right + 1] > half:
            right += 1
        lo = left - 1 + (line[left - 1] - half) / (line[left - 1] - line[left]) if left else 0.0
        hi = (
            right + (line[right] - half) / (line[right] - line[right + 1])
            if right < line.size - 1
            else float(line.size - 1)
        )
        widths.append(hi - lo)
    return float(np.mean(widths))


def crop_psf(psf: PSF, n_sigma: float = 4.0, min_size: int = 3) -> PSF:
    """Crop to about +-``n_sigma`` standard deviations per axis (odd size), renormalised.

    Sigma comes from the second moments of the in-focus part (the central third) so that
    far-out-of-focus rings of a 3D PSF do not inflate it.
    """
    core = psf.data
    sl = tuple(slice(s // 3, s - s // 3) for s in core.shape)
    sigmas = psf_sigma_px(PSF(core[sl] / core[sl].sum(), psf.pixel_size_nm))
    out = psf.data
    for axis, sigma in enumerate(sigmas):
        n = out.shape[axis]
        half = min(n // 2, max(min_size // 2, int(np.ceil(n_sigma * sigma))))
        out = np.take(out, np.arange(n // 2 - half, n // 2 + half + 1), axis=axis)
    return PSF((out / out.sum()).astype(np.float32), psf.pixel_size_nm, psf.source)


def psf_summary(psf: PSF, sha256: str | None = None) -> dict:
    """The PSF summary stored in model metadata."""
    summary = {
        "shape": list(psf.data.shape),
        "pixel_size_nm": [round(p, 3) for p in psf.pixel_size_nm],
        "source": psf.source,
    }
    if sha256:
        summary["sha256"] = sha256
    return summary
