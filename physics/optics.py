"""Point-spread-function models of a widefield fluorescence microscope.

All lengths are in nanometres; PSF arrays are ``YX`` (2D) or ``ZYX`` (3D), normalised to sum 1
(each plane integrates the light that falls on that camera pixel: every model is evaluated on an
oversampled grid and binned onto the output pixels).

Models
------
``pupil``
    The scalar defocused-pupil model of the reference implementation: a pupil of radius
    ``NA / lambda`` in frequency space, a defocus phase ``exp(2 pi i z k_z)`` with
    ``k_z = sqrt((n / lambda)^2 - k_r^2)``, and the intensity ``|FFT|^2`` of each plane.
``gaussian``
    A Gaussian with the same lateral FWHM as the in-focus Airy disk (0.514 lambda/NA) and the
    axial FWHM of the pupil model (0.88 lambda / (n - sqrt(n^2 - NA^2))).
``gibson-lanni``
    The Gibson-Lanni model (coverslip and immersion mismatch) through the MIT-licensed
    ``microscpsf-py`` package (optional: ``pip install microscpsf-py``).
``confocal``
    A point-scanning confocal with a small pinhole: the product of the excitation and emission
    pupil PSFs (both from the ``pupil`` model).
"""

from __future__ import annotations

import math

import numpy as np

from ..runtime.errors import InputError

MODELS = ("pupil", "gaussian", "gibson-lanni", "confocal")
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def lateral_fwhm_nm(na: float, wavelength_nm: float) -> float:
    """In-focus lateral FWHM of the widefield (Airy) PSF: 0.514 lambda / NA."""
    return 0.5145 * wavelength_nm / na


def axial_fwhm_nm(na: float, wavelength_nm: float, refractive_index: float) -> float:
    """Axial FWHM of the widefield PSF, 0.88 lambda / (n - sqrt(n^2 - NA^2))."""
    return 0.88 * wavelength_nm / (refractive_index - math.sqrt(refractive_index**2 - na**2))


def _check_optics(na: float, wavelength_nm: float, refractive_index: float, pixel_nm: float):
    if not 0 < na < refractive_index:
        raise InputError(
            f"NA {na} must be positive and below the refractive index {refractive_index} "
            "(set --refractive-index for your immersion medium)"
        )
    if wavelength_nm <= 0 or pixel_nm <= 0:
        raise InputError("wavelength and pixel size must be positive (both in nm)")
    if wavelength_nm < 100:
        raise InputError(f"wavelength {wavelength_nm} looks like micrometres; give it in nm")


def _odd(size: int) -> int:
    if size < 3 or size % 2 == 0:
        raise InputError(f"PSF size must be odd and >= 3, got {size}")
    return size


def _bin(fine: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor x factor`` blocks of the last two axes (camera pixels integrate light)."""
    *lead, h, w = fine.shape
    return fine.reshape(*lead, h // factor, factor, w // factor, factor).sum(axis=(-3, -1))


def z_positions(z_size: int, z_step_nm: float) -> np.ndarray:
    """Plane positions (nm) of an odd-sized stack centred on focus."""
    _odd(z_size)
    return (np.arange(z_size) - z_size // 2) * z_step_nm


def pupil_psf(
    size: int,
    pixel_nm: float,
    na: float,
    wavelength_nm: float,
    refractive_index: float = 1.518,
    z_nm: np.ndarray | None = None,
    oversample: int = 3,
) -> np.ndarray:
    """Scalar defocused-pupil PSF (the reference's model).

    Parameters
    ----------
    size : int
        Odd lateral size in output pixels.
    pixel_nm : float
        Output pixel size (nm).
    na, wavelength_nm, refractive_index : float
        Numerical aperture, emission wavelength (nm), immersion refractive index.
    z_nm : numpy.ndarray, optional
        Defocus of each plane (nm); default: the focal plane only.
    oversample : int
        Odd oversampling factor of the computation grid (light is integrated per pixel).

    Returns
    -------
    numpy.ndarray
        ``(len(z_nm), size, size)`` float32, the whole stack normalised to sum 1.
    """
    _check_optics(na, wavelength_nm, refractive_index, pixel_nm)
    size = _odd(size)
    # Oversample only pixels coarser than lambda / (8 NA); finer pixels gain nothing from it.
    needed = math.ceil(pixel_nm * 8 * na / wavelength_nm)
    oversample = max(1, min(oversample, needed + (needed + 1) % 2))
    z_nm = np.zeros(1) if z_nm is None else np.asarray(z_nm, float)
    dx = pixel_nm / oversample
    crop = size * oversample
    # The pupil must span >= ~24 frequency samples in radius (else the PSF is too narrow), and
    # the defocused PSF spreads to ~|z| tan(theta): the grid must hold it without wrapping.
    spread = float(np.abs(z_nm).max()) * math.tan(math.asin(na / refractive_index))
    n = max(256, 2 * crop, 48 * wavelength_nm / (na * dx), crop + 2 * spread / dx)
    n = min(2 ** math.ceil(math.log2(n)), 4096)
    k = np.fft.fftfreq(n, dx)  # cycles / nm
    kr2 = k[None, :] ** 2 + k[:, None] ** 2
    inside = kr2 <= (na / wavelength_nm) ** 2
    kz = np.sqrt(np.maximum((refractive_index / wavelength_nm) ** 2 - kr2, 0.0))
    lo = n // 2 - crop // 2
    planes = []
    for z in z_nm:
        field = np.fft.ifft2(np.where(inside, np.exp(2j * np.pi * z * kz), 0))
        intensity = np.fft.fftshift(np.abs(field) ** 2)[lo : lo + crop, lo : lo + crop]
        planes.append(_bin(intensity, oversample))
    psf = np.stack(planes)
    return (psf / psf.sum()).astype(np.float32)


def gaussian_psf(
    size: int,
    pixel_nm: float,
    na: float,
    wavelength_nm: float,
    refractive_index: float = 1.518,
    z_nm: np.ndarray | None = None,
    oversample: int = 5,
) -> np.ndarray:
    """Gaussian approximation matching the widefield lateral and axial FWHM.

    Returns ``(len(z_nm), size, size)`` float32 normalised to sum 1.
    """
    _check_optics(na, wavelength_nm, refractive_index, pixel_nm)
    size = _odd(size)
    z_nm = np.zeros(1) if z_nm is None else np.asarray(z_nm, float)
    sigma_xy = lateral_fwhm_nm(na, wavelength_nm) / FWHM_PER_SIGMA
    sigma_z = axial_fwhm_nm(na, wavelength_nm, refractive_index) / FWHM_PER_SIGMA
    r = (np.arange(size * oversample) - (size * oversample - 1) / 2) * pixel_nm / oversample
    lateral = np.exp(-(r[None, :] ** 2 + r[:, None] ** 2) / (2 * sigma_xy**2))
    lateral = _bin(lateral, oversample)
    axial = np.exp(-(z_nm**2) / (2 * sigma_z**2))
    psf = axial[:, None, None] * lateral[None]
    return (psf / psf.sum()).astype(np.float32)


def gibson_lanni_psf(
    size: int,
    pixel_nm: float,
    na: float,
    wavelength_nm: float,
    refractive_index: float = 1.518,
    z_nm: np.ndarray | None = None,
    sample_index: float = 1.33,
    particle_depth_nm: float = 0.0,
) -> np.ndarray:
    """Gibson-Lanni PSF through ``microscpsf-py`` (MIT licence, optional dependency)."""
    try:
        from microscPSF import microscPSF as gl
    except ImportError:
        raise InputError(
            "the gibson-lanni model needs the optional package microscpsf-py "
            "(pip install microscpsf-py)"
        ) from None
    _check_optics(na, wavelength_nm, refractive_index, pixel_nm)
    z_nm = np.zeros(1) if z_nm is None else np.asarray(z_nm, float)
    params = dict(gl.m_params, NA=na, ni=refractive_index, ni0=refractive_index, ns=sample_index)
    psf = gl.gLXYZFocalScan(
        params,
        pixel_nm / 1e3,
        _odd(size),
        z_nm / 1e3,
        normalize=False,
        pz=particle_depth_nm / 1e3,
        wvl=wavelength_nm / 1e3,
    )
    psf = np.asarray(psf, float)
    return (psf / psf.sum()).astype(np.float32)


def confocal_psf(
    size: int,
    pixel_nm: float,
    na: float,
    wavelength_nm: float,
    refractive_index: float = 1.518,
    z_nm: np.ndarray | None = None,
    excitation_nm: float | None = None,
) -> np.ndarray:
    """Small-pinhole confocal PSF: excitation PSF x emission PSF, normalised to sum 1."""
    emission = pupil_psf(size, pixel_nm, na, wavelength_nm, refractive_index, z_nm)
    excitation = pupil_psf(
        size, pixel_nm, na, excitation_nm or wavelength_nm, refractive_index, z_nm
    )
    psf = emission.astype(np.float64) * excitation
    return (psf / psf.sum()).astype(np.float32)


def make_psf(
    model: str,
    size: int,
    pixel_nm: float,
    na: float,
    wavelength_nm: float,
    refractive_index: float = 1.518,
    z_nm: np.ndarray | None = None,
    excitation_nm: float | None = None,
) -> np.ndarray:
    """Dispatch to a PSF model by name; returns ``(nz, size, size)`` summing to 1."""
    functions = {"pupil": pupil_psf, "gaussian": gaussian_psf, "gibson-lanni": gibson_lanni_psf}
    if model == "confocal":
        return confocal_psf(
            size, pixel_nm, na, wavelength_nm, refractive_index, z_nm, excitation_nm
        )
    if model not in functions:
        raise InputError(f"unknown PSF model {model!r}; choose one of {MODELS}")
    return functions[model](size, pixel_nm, na, wavelength_nm, refractive_index, z_nm)
