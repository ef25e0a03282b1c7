"""Quality metrics as the paper measures them, plus resolution estimates.

- PSNR / SSIM (the paper's protocol): both images percentile-normalised, the output mapped to
  the reference by a least-squares linear fit, then PSNR and SSIM (scikit-image) on range 1.
- Bead FWHM: a 2D Gaussian fitted at each known bead position.
- FRC between two independent images (1/7 threshold).
- Decorrelation analysis (Descloux, Grussmayer & Radenovic, Nat. Methods 2019) for one image.

Arrays are ``YX``; pixel sizes in nm; resolutions returned in nm.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from skimage.metrics import structural_similarity
from skimage.transform import resize

NORM_PERCENTILES = (0.1, 99.9)


def percentile_normalize(x: np.ndarray, low: float = 0.1, high: float = 99.9) -> np.ndarray:
    """Map percentiles ``low``/``high`` to 0/1 (float64, not clipped)."""
    lo, hi = np.percentile(x, [low, high])
    return (np.asarray(x, np.float64) - lo) / max(hi - lo, 1e-12)


def match_to_reference(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Resize ``output`` to the reference grid (bilinear, pixel-centre aligned) if needed."""
    if output.shape == reference.shape:
        return np.asarray(output, np.float64)
    return resize(np.asarray(output, np.float64), reference.shape, order=1, anti_aliasing=False)


def linear_fit(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Least-squares ``a * output + b`` closest to ``reference``."""
    a, b = np.polyfit(output.ravel(), reference.ravel(), 1)
    return a * output + b


def psnr_ssim(output: np.ndarray, reference: np.ndarray, crop: int = 0) -> dict[str, float]:
    """The paper's PSNR (dB) and SSIM of ``output`` against ``reference``.

    Parameters
    ----------
    output : numpy.ndarray
        Restored image; resized to the reference grid if its shape differs.
    reference : numpy.ndarray
        Ground truth or reference image.
    crop : int
        Border (reference pixels) excluded on every side.
    """
    out = match_to_reference(output, reference)
    if crop:
        sl = (slice(crop, -crop),) * reference.ndim
        out, reference = out[sl], reference[sl]
    ref = percentile_normalize(reference, *NORM_PERCENTILES)
    fitted = linear_fit(percentile_normalize(out, *NORM_PERCENTILES), ref)
    mse = float(np.mean((fitted - ref) ** 2))
    psnr = 10 * np.log10(1.0 / mse)
    ssim = float(structural_similarity(fitted, ref, data_range=1.0))
    return {"psnr": float(psnr), "ssim": ssim}


def _gauss2d(coords, amplitude, y0, x0, sigma, offset):
    y, x = coords
    return amplitude * np.exp(-((y - y0) ** 2 + (x - x0) ** 2) / (2 * sigma**2)) + offset


def bead_fwhm(
    image: np.ndarray, positions: np.ndarray, pixel_nm: float, radius: int = 6
) -> dict[str, float]:
    """Mean lateral FWHM (nm) of Gaussian fits at bead ``positions`` (``[n, 2]`` pixels, YX).

    Returns the mean, the standard deviation and the number of beads that fitted.
    """
    image = np.asarray(image, np.float64)
    widths = []
    for y, x in np.asarray(positions)[:, -2:]:
        yi, xi = int(round(y)), int(round(x))
        if not (radius <= yi < image.shape[0] - radius and radius <= xi < image.shape[1] - radius):
            continue
        win = image[yi - radius : yi + radius + 1, xi - radius : xi + radius + 1]
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        guess = (win.max() - np.median(win), y - yi, x - xi, 1.5, np.median(win))
        try:
            with warnings.catch_warnings():  # ill-conditioned fits are dropped below
                warnings.simplefilter("ignore", OptimizeWarning)
                params, _ = curve_fit(
                    _gauss2d, (yy.ravel(), xx.ravel()), win.ravel(), p0=guess, maxfev=2000
                )
        except (RuntimeError, ValueError):
            continue
        amplitude, dy, dx, sigma, _ = params
        if amplitude > 0 and 0.2 < abs(sigma) < radius and abs(dy) < 2 and abs(dx) < 2:
            widths.append(2.3548 * abs(sigma) * pixel_nm)
    widths = np.array(widths)
    return {
        "fwhm_nm": float(widths.mean()) if widths.size else float("nan"),
        "std_nm": float(widths.std()) if widths.size else float("nan"),
        "n": int(widths.size),
    }


def _radial_bins(shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    n = min(shape) // 2
    r = np.sqrt(fy**2 + fx**2) * 2 * n  # ring index, n rings up to Nyquist
    return np.round(r).astype(int), n


def frc(a: np.ndarray, b: np.ndarray, pixel_nm: float, threshold: float = 1 / 7) -> dict:
    """Fourier ring correlation of two independent images of the same field.

    Returns the curve (frequency in 1/nm, correlation) and the resolution (nm) where it first
    drops below ``threshold``.
    """
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa = np.fft.fft2((a - a.mean()) * window)
    fb = np.fft.fft2((b - b.mean()) * window)
    rings, n = _radial_bins(a.shape)
    num = np.bincount(rings.ravel(), (fa * fb.conj()).real.ravel(), minlength=n + 1)[: n + 1]
    da = np.bincount(rings.ravel(), (np.abs(fa) ** 2).ravel(), minlength=n + 1)[: n + 1]
    db = np.bincount(rings.ravel(), (np.abs(fb) ** 2).ravel(), minlength=n + 1)[: n + 1]
    curve = num / np.sqrt(da * db + 1e-30)
    freq = np.arange(n + 1) / (2 * n * pixel_nm)
    below = np.nonzero(curve[1:] < threshold)[0]
    cutoff = freq[below[0] + 1] if below.size else freq[-1]
    return {"frequency": freq, "frc": curve, "resolution_nm": float(1 / cutoff)}


def _decorrelation_peak(
    spectrum: np.ndarray, normalized: np.ndarray, radii: np.ndarray, ring: np.ndarray
):
    """Peak position (fraction of Nyquist) and amplitude of the decorrelation curve.

    ``ring`` holds, per frequency, the index of the first radius whose disc contains it (the
    disc sums of every radius are cumulative sums over rings: one pass instead of one masked
    pass per radius)."""
    n = radii.size
    norm_i = np.sqrt((np.abs(spectrum) ** 2).sum())
    cross = np.bincount(ring, (spectrum * normalized.conj()).real.ravel(), n + 1)[:n]
    power = np.bincount(ring, (np.abs(normalized) ** 2).ravel(), n + 1)[:n]
    values = np.cumsum(cross) / (norm_i * np.sqrt(np.cumsum(power)) + 1e-30)
    # the last local maximum that stands clear of the curve's end (noise-free peak)
    k = int(np.argmax(values[:-1])) if values.size > 1 else 0
    return radii[k], values[k]


def decorrelation_resolution(
    image: np.ndarray, pixel_nm: float, n_radii: int = 50, n_filters: int = 10
) -> float:
    """Single-image resolution (nm) by decorrelation analysis (Descloux et al. 2019).

    The image spectrum is normalised to unit modulus, correlated with the original inside
    discs of growing radius, the peak position gives a cut-off frequency; repeating with
    Gaussian high-pass filters of decreasing width, the highest peak frequency is kept.
    Resolution = 2 * pixel / k_c with k_c in units of Nyquist.
    """
    img = np.asarray(image, np.float64)
    img = img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]
    window = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    img = (img - img.mean()) * window
    fy = np.fft.fftfreq(img.shape[0])[:, None] * 2
    fx = np.fft.fftfreq(img.shape[1])[None, :] * 2
    r = np.sqrt(fy**2 + fx**2)  # in units of Nyquist
    spectrum = np.fft.fft2(img)
    spectrum[r > 1] = 0
    normalized = spectrum / (np.abs(spectrum) + 1e-30)
    radii = np.linspace(0.02, 1.0, n_radii)
    ring = np.searchsorted(radii, r.ravel(), side="left")  # in disc k when ring <= k
    k0, a0 = _decorrelation_peak(spectrum, normalized, radii, ring)
    best = k0 if a0 > 0.05 else 0.0
    for sigma in np.exp(np.linspace(np.log(0.15), np.log(max(k0, 0.16) * 2), n_filters)):
        highpass = spectrum * (1 - np.exp(-(r**2) / (2 * sigma**2)))
        k, a = _decorrelation_peak(highpass, highpass / (np.abs(highpass) + 1e-30), radii, ring)
        if a > 0.05 and k < radii[-2]:
            best = max(best, k)
    if best <= 0:
        return float("nan")
    return float(2 * pixel_nm / best)


def _gauss1d(z, amplitude, z0, sigma, offset):
    return amplitude * np.exp(-((z - z0) ** 2) / (2 * sigma**2)) + offset


def bead_fwhm_3d(
    volume: np.ndarray,
    positions: np.ndarray,
    pixel_nm: float,
    z_step_nm: float,
    radius: int = 6,
    radius_z: int = 6,
) -> dict[str, float]:
    """Lateral and axial FWHM (nm) of beads in a ``ZYX`` volume at ``positions`` (``[n, 3]``).

    Lateral: a 2D Gaussian on the plane through the bead; axial: a 1D Gaussian along z through
    the bead's brightest pixel of that plane. Means over the beads that fitted.
    """
    volume = np.asarray(volume, np.float64)
    lateral, axial = [], []
    for z, y, x in np.asarray(positions):
        zi = int(round(z))
        if not radius_z <= zi < volume.shape[0] - radius_z:
            continue
        fit = bead_fwhm(volume[zi], np.array([[y, x]]), pixel_nm, radius)
        if fit["n"]:
            lateral.append(fit["fwhm_nm"])
        yi, xi = int(round(y)), int(round(x))
        if not (0 <= yi < volume.shape[1] and 0 <= xi < volume.shape[2]):
            continue
        line = volume[zi - radius_z : zi + radius_z + 1, yi, xi]
        zz = np.arange(-radius_z, radius_z + 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                params, _ = curve_fit(
                    _gauss1d,
                    zz,
                    line,
                    maxfev=2000,
                    p0=(line.max() - line.min(), z - zi, 2.0, line.min()),
                )
        except (RuntimeError, ValueError):
            continue
        amplitude, dz, sigma, _ = params
        if amplitude > 0 and 0.3 < abs(sigma) < radius_z and abs(dz) < 2:
            axial.append(2.3548 * abs(sigma) * z_step_nm)
    return {
        "fwhm_lateral_nm": float(np.mean(lateral)) if lateral else float("nan"),
        "fwhm_axial_nm": float(np.mean(axial)) if axial else float("nan"),
        "n": min(len(lateral), len(axial)),
    }


# -- without ground truth: fit to the data, and structure where there is none -----------------


def bin_to_camera(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor x factor`` blocks in y and x (leading axes kept): an output on the finer
    grid back on the camera's."""
    h, w = (s // factor * factor for s in image.shape[-2:])
    lead = image.shape[:-2]
    blocks = np.asarray(image, np.float64)[..., :h, :w].reshape(
        *lead, h // factor, factor, w // factor, factor
    )
    return blocks.mean(axis=(-3, -1))


def reblurred(output: np.ndarray, psf_sr: np.ndarray, factor: int = 2) -> np.ndarray:
    """The output (on the ``factor`` x finer grid; ``YX`` or ``ZYX``) as the microscope would
    have recorded it: blurred by the PSF on that grid and binned back to camera pixels. Outside
    the image counts as zero, so a band of about half the PSF's width along the edges reads low."""
    from scipy.signal import fftconvolve

    return bin_to_camera(fftconvolve(np.asarray(output, np.float64), psf_sr, "same"), factor)


def residual(
    output: np.ndarray, raw: np.ndarray, psf_sr: np.ndarray, factor: int = 2
) -> np.ndarray:
    """:func:`reblurred` output minus the raw image (camera pixels, the raw image's units)."""
    blurred = reblurred(output, psf_sr, factor)
    raw = np.asarray(raw, np.float64)[..., : blurred.shape[-2], : blurred.shape[-1]]
    return blurred - raw


def data_term(output: np.ndarray, raw: np.ndarray, psf_sr: np.ndarray, factor: int = 2) -> float:
    """The training loss's data term measured on the whole image: :func:`residual`'s mean
    absolute value, as a fraction of the raw image's 0.1-99.9 percentile range. It cannot reach
    zero (the raw image is noisy); lower means the output explains the data better."""
    lo, hi = np.percentile(np.asarray(raw, np.float64), NORM_PERCENTILES)
    return float(np.abs(residual(output, raw, psf_sr, factor)).mean() / (hi - lo))


def blank_mask(raw: np.ndarray, fraction: float = 0.25, margin: int = 4) -> np.ndarray:
    """Background pixels of a real image: the darkest ``fraction`` of the image smoothed over 3
    px, shrunk by ``margin`` px so that no structure's blurred edge is counted."""
    from scipy.ndimage import binary_erosion, gaussian_filter

    smooth = gaussian_filter(np.asarray(raw, np.float64), 3)
    mask = smooth <= np.percentile(smooth, 100 * fraction)
    return binary_erosion(mask, iterations=margin)


def blank_texture(output: np.ndarray, raw: np.ndarray, mask: np.ndarray, factor: int = 2) -> float:
    """How much structure an output carries where the sample has none.

    The standard deviation of the output (binned to camera pixels) over ``mask`` (blank
    background, or the whole of a pure-noise image), divided by the raw image's standard
    deviation there. Over blank background the raw image's variation is noise alone, so 0 is a
    flat output, 1 keeps as much variation as the noise had, and anything a network invents
    (puncta, filaments, texture from a prior) adds to it; denoising alone lowers it.
    """
    binned = bin_to_camera(output, factor)
    m = mask[: binned.shape[0], : binned.shape[1]]
    raw = np.asarray(raw, np.float64)[: binned.shape[0], : binned.shape[1]]
    return float(binned[m].std() / max(raw[m].std(), 1e-12))
