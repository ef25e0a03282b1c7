"""How far to trust a restoration, measured on the image itself (no ground truth).

Given the raw image, the two outputs of a model and the PSF, :func:`assess` measures

- the **data term**: the deconvolved output re-blurred by the PSF and binned back to camera
  pixels, against the raw image (mean absolute difference / raw 0.1-99.9 % range), the
  training loss's own data term on the whole image;
- **residual structure**: the power of that residual inside the PSF's passband over its power
  beyond it, minus 1. The raw image's noise is white, so a residual that is noise alone scores
  about 0; a residual holding sample structure (a PSF or noise-model mismatch, or too little
  training) scores above;
- **resolution** (decorrelation analysis, nm) of the raw image, the denoised and the deconvolved
  output (the middle plane of a stack); on the raw image it is led by the noise and only
  reported; sharpening is judged from denoised to deconvolved, and only where the denoised
  output is limited by the optics (within 2x the PSF's cut-off period);
- **clipped pixels**: the fraction of deconvolved pixels sitting flat at the output's maximum,
  or at its minimum beside bright objects (a floor in blank background removes nothing);
- **ringing**: how far the darkest 5 % of the surroundings of bright objects (one to three PSF
  widths away) dip below the blank background, as a fraction of the objects' brightness above
  it. Over-deconvolution (a PSF too wide) digs such dark halos; a clean result keeps them at
  the background.

and turns them into warnings with thresholds stated here. Arrays are ``YX`` or ``ZYX``; the
deconvolved output is ``factor`` times finer in y and x; lengths in nm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter

from .metrics import NORM_PERCENTILES, blank_mask, decorrelation_resolution, residual
from .psf import PSF, fwhm_px

#: Residual power in the passband over the noise's, minus 1, above which the residual has
#: structure (simulated filaments, 60 s of training: 0.07 with the true PSF, 0.39 with one 24 %
#: too wide; benchmarks/RESULTS.md)
MAX_RESIDUAL_STRUCTURE = 0.25
#: Fraction of flat-clipped deconvolved pixels above which a warning is given
MAX_CLIPPED = 0.001
#: Dark-halo depth (fraction of the objects' brightness) above which ringing is reported
MAX_RINGING = 0.10
#: The deconvolved output's resolution must be at most this fraction of the denoised output's
MIN_SHARPENING = 0.95
#: ... judged only where the denoised output's resolution is within this factor of the PSF's
#: cut-off period: an image of large smooth objects (nuclei at low magnification) is limited by
#: its objects, not by the optics, and decorrelation cannot show a sharpening there
OPTICS_LIMITED = 2.0
#: Residual passband: this fraction of the PSF's cut-off (the lowest frequencies hold the
#: background's slow variation, which the loss does not see either)
PASSBAND = (0.1, 0.9)
#: Noise band: beyond this multiple of the larger of the PSF's and the data's cut-off
NOISE_BAND = 1.2


@dataclass
class QualityReport:
    """Numbers and warnings for one restored image; see the module docstring."""

    data_term: float
    residual_structure: float | None
    resolution_nm: dict[str, float]
    clipped_fraction: float
    ringing: float | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready (floats rounded, NaN as None)."""

        def clean(x):
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            if isinstance(x, float):
                return None if not np.isfinite(x) else round(x, 5)
            return x

        return clean(asdict(self))

    def summary(self) -> str:
        """One line: the numbers that matter most, and how many warnings."""
        res = self.resolution_nm
        parts = [
            f"data term {self.data_term:.4f}",
            f"resolution {res.get('denoised', float('nan')):.0f} nm denoised -> "
            f"{res.get('deconvolved', float('nan')):.0f} nm deconvolved",
            f"clipped {self.clipped_fraction:.2%}",
        ]
        if self.ringing is not None:
            parts.append(f"ringing {self.ringing:.3f}")
        if self.residual_structure is not None:
            parts.append(f"residual structure {self.residual_structure:.2f}")
        warned = f"{len(self.warnings)} warning(s)" if self.warnings else "no warnings"
        return f"quality: {', '.join(parts)}; {warned}"


def _lateral_power(image: np.ndarray, pixel_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Power per lateral frequency (Hann-windowed, planes averaged) and the frequencies."""
    data = np.asarray(image, np.float64).reshape(-1, *image.shape[-2:])
    window = np.outer(np.hanning(data.shape[1]), np.hanning(data.shape[2]))
    data = (data - data.mean(axis=(1, 2), keepdims=True)) * window
    power = (np.abs(np.fft.fft2(data)) ** 2).mean(axis=0)
    fy = np.fft.fftfreq(data.shape[1], pixel_nm)[:, None]
    fx = np.fft.fftfreq(data.shape[2], pixel_nm)[None, :]
    return power, np.sqrt(fy**2 + fx**2)


def residual_structure(
    res: np.ndarray, pixel_nm: float, cutoff: float, data_cutoff: float | None = None
) -> float | None:
    """Residual power in the passband over its power in the noise band, minus 1 (``None``
    when the pixel size leaves no frequencies beyond the cut-offs). Cut-offs in cycles/nm."""
    power, k = _lateral_power(res, pixel_nm)
    band = (k >= PASSBAND[0] * cutoff) & (k <= PASSBAND[1] * cutoff)
    noise = k > NOISE_BAND * max(cutoff, data_cutoff or 0.0)
    if noise.sum() < 50 or band.sum() < 50:
        return None
    return float(power[band].mean() / power[noise].mean() - 1)


def _ring_masks(
    deconvolved: np.ndarray, blank: np.ndarray, width_px: float
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """Around bright objects: the ring one to three PSF widths out, the blank background level
    and the objects' brightness. ``None`` without both blank background and bright objects."""
    smooth = gaussian_filter(np.asarray(deconvolved, np.float64), 1.0)
    if blank.sum() < 100:
        return None
    background = float(np.median(deconvolved[blank]))
    peak = float(np.percentile(smooth, 99.9))
    if peak <= background:
        return None
    bright = smooth > background + 0.5 * (peak - background)
    inner = max(1, int(round(width_px)))
    near = binary_dilation(bright, iterations=inner)
    ring = binary_dilation(bright, iterations=3 * inner) & ~near
    if ring.sum() < 50:
        return None
    return ring, near, background, peak


def ringing(
    deconvolved: np.ndarray, blank: np.ndarray, width_px: float
) -> tuple[float | None, np.ndarray | None]:
    """Dark-halo depth around bright objects (see the module docstring), and the mask of the
    objects with their surroundings; ``blank`` marks blank background on the deconvolved grid,
    ``width_px`` the PSF's FWHM on that grid. ``(None, None)`` where there is nothing to
    measure (no blank background or no bright objects)."""
    masks = _ring_masks(deconvolved, blank, width_px)
    if masks is None:
        return None, None
    ring, near, background, peak = masks
    dip = background - float(np.percentile(deconvolved[ring], 5))
    return max(0.0, dip / (peak - background)), ring | near


def clipped_fraction(deconvolved: np.ndarray, near: np.ndarray | None) -> float:
    """Fraction of pixels sitting flat (within 1e-6 of the range) at the output's maximum, or
    at its minimum within ``near`` (bright objects and three PSF widths around them): a floor
    in blank background (a positivity constraint) removes nothing, one beside objects cuts
    their dark halos or their signal."""
    d = np.asarray(deconvolved, np.float64)
    lo, hi = float(d.min()), float(d.max())
    eps = 1e-6 * max(hi - lo, 1e-12)
    flat = d >= hi - eps
    if near is not None:
        flat |= (d <= lo + eps) & near
    return float(flat.mean()) if flat.sum() > 2 else 0.0


def _plane(image: np.ndarray) -> np.ndarray:
    return image[image.shape[0] // 2] if image.ndim == 3 else image


def assess(
    raw: np.ndarray,
    denoised: np.ndarray,
    deconvolved: np.ndarray,
    psf_sr: PSF,
    pixel_nm: float,
    cutoff: float,
    factor: int = 2,
    data_cutoff: float | None = None,
) -> QualityReport:
    """Measure a restoration of ``raw`` and say what looks wrong.

    Parameters
    ----------
    raw, denoised : numpy.ndarray
        The camera image (ADU) and stage 1's output, ``YX`` or ``ZYX``.
    deconvolved : numpy.ndarray
        Stage 2's output, ``factor`` times finer in y and x, raw units.
    psf_sr : PSF
        The PSF on the deconvolved grid (z step of the stack in 3D), summing to 1.
    pixel_nm : float
        Camera pixel size (nm).
    cutoff : float
        The PSF's lateral cut-off frequency (cycles/nm; :func:`psf_check.psf_cutoff`).
    factor : int
        Lateral upsampling of the deconvolved output.
    data_cutoff : float, optional
        The data's own cut-off when a PSF check measured one (cycles/nm).
    """
    raw = np.asarray(raw, np.float64)
    res = residual(deconvolved, raw, psf_sr.data, factor)
    lo, hi = np.percentile(raw, NORM_PERCENTILES)
    data_term = float(np.abs(res).mean() / max(hi - lo, 1e-12))
    structure = residual_structure(res, pixel_nm, cutoff, data_cutoff)
    resolution = {
        "input": decorrelation_resolution(_plane(raw), pixel_nm),
        "denoised": decorrelation_resolution(_plane(denoised), pixel_nm),
        "deconvolved": decorrelation_resolution(_plane(deconvolved), pixel_nm / factor),
    }
    blank = np.stack([blank_mask(p) for p in raw.reshape(-1, *raw.shape[-2:])])
    blank_sr = np.repeat(np.repeat(blank, factor, axis=-2), factor, axis=-1).reshape(
        *raw.shape[:-2], raw.shape[-2] * factor, raw.shape[-1] * factor
    )
    dec = np.asarray(deconvolved, np.float64)
    blank_sr = blank_sr[..., : dec.shape[-2], : dec.shape[-1]]
    width = fwhm_px(_plane(psf_sr.data))
    ring, near = ringing(_plane(dec), _plane(blank_sr), width)
    report = QualityReport(
        data_term=data_term,
        residual_structure=structure,
        resolution_nm=resolution,
        clipped_fraction=clipped_fraction(_plane(dec), near),
        ringing=ring,
    )
    report.warnings = warnings_for(report, 1 / cutoff)
    return report


def warnings_for(report: QualityReport, cutoff_nm: float) -> list[str]:
    """The warnings a report's numbers call for, each saying what to change; ``cutoff_nm`` is
    the finest period the PSF passes."""
    found = []
    res = report.resolution_nm
    # the denoised output stands for the input: same optics, but decorrelation analysis of
    # the raw image is led by its noise (it can even report detail finer than the optics pass)
    before = res["denoised"]
    judged = np.isfinite(before) and before <= OPTICS_LIMITED * cutoff_nm
    if judged and not res["deconvolved"] < MIN_SHARPENING * before:
        found.append(
            f"the deconvolved output is not sharper than the input ({res['deconvolved']:.0f} "
            f"nm against {before:.0f} nm denoised): the PSF may be too narrow, or training "
            "too short"
        )
    if report.residual_structure is not None and (
        report.residual_structure > MAX_RESIDUAL_STRUCTURE
    ):
        found.append(
            f"the residual (re-blurred output minus input) has structure "
            f"({report.residual_structure:.2f} > {MAX_RESIDUAL_STRUCTURE}): the output does not "
            "explain the data; check the PSF (zsdeconvnet check-psf) and the background, or "
            "train longer"
        )
    if report.clipped_fraction > MAX_CLIPPED:
        found.append(
            f"{report.clipped_fraction:.2%} of the deconvolved pixels are clipped flat: "
            "check the background (--background) and the PSF"
        )
    if report.ringing is not None and report.ringing > MAX_RINGING:
        found.append(
            f"dark halos around bright objects (ringing {report.ringing:.2f} > {MAX_RINGING}): "
            "the PSF is probably too wide (check NA, wavelength, pixel sizes), or raise "
            "--hessian-weight"
        )
    return found
