"""Does the PSF fit the data? The passband the image shows against the one the PSF implies.

A widefield image is the sample blurred by the PSF plus white camera noise, so its power
spectrum is ``|S(k)|^2 |OTF(k)|^2 + N``. The sample's spectrum ``|S|^2`` is unknown but smooth:
modelled as a power law ``A |k|^-alpha``. The OTF's shape is what the PSF fixes; a PSF that is
``r`` times too narrow has an OTF ``r`` times too wide. So the check fits

    P(k) = A (|k| / k0)^-alpha |OTF_psf(k / s)|^2 + N

for a grid of passband ratios ``s`` (``s = 1``: the PSF is right; ``s < 1``: the data's passband
ends before the PSF's, the PSF is too narrow; ``s > 1``: the data hold detail the PSF cannot
pass, the PSF is too wide), with ``A``, ``alpha`` and ``N`` free at each ``s``, and keeps the
best ``s`` with a profile-likelihood interval. One scale stretches all axes (a wrong wavelength
or NA scales the lateral and axial widths together; in 3D, lateral and axial are not told
apart).

Physics sets a limit no fit can pass: the data show the PSF only where the signal stands above
the noise. Where the signal fades into the noise well inside the passband (dim samples, or large
smooth objects such as nuclei whose power sits at low frequencies), the interval is wide and the
check says it cannot tell rather than guessing (:attr:`PSFCheck.verdict` ``"inconclusive"``);
so it does when the pixels are coarser than the optics' Nyquist sampling (the PSF's cut-off lies
beyond what the pixel grid can show) and when the field is too small.

Written here because no field library fits a PSF width to an image's spectrum. Arrays ``YX`` or
``ZYX``; lengths in nm, frequencies in cycles/nm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.optimize import least_squares

from ..runtime.errors import InputError
from .psf import PSF, fwhm_px

#: A mismatch is reported when the passband ratio is off by more than this fraction
TOLERANCE = 0.10
#: ... and the 95 % interval of the ratio lies wholly on that side of 1
CONFIDENCE_CHI2 = 3.84
#: The interval must be narrower than this (in log ratio) for any verdict; else inconclusive
MAX_INTERVAL = math.log(1.25)
#: The halves' spread (standard deviation of log ratio, scaled to the whole field) times this
#: is the least half-width of the interval
SPLIT_FACTOR = 2.0
#: Passband ratios tried (data cut-off / PSF cut-off)
SCALES = np.exp(np.linspace(math.log(0.5), math.log(2.0), 41))
#: Frequencies below this fraction of the PSF's cut-off are left out (the sample's large-scale
#: layout, not the optics, shapes them)
LOW_CUT = 0.2
#: Radial bins from 0 to the corner of the spectrum
RADIAL_BINS = 96
#: The PSF's cut-off: where its in-focus OTF falls below this fraction of the peak
CUTOFF_LEVEL = 0.01
#: The smallest field that can tell (2D: y, x; 3D: z, y, x): smaller 3D stacks gave false
#: alarms on the simulator (benchmarks/RESULTS.md)
MIN_FIELD = {2: (64, 64), 3: (24, 96, 96)}
#: The largest field analysed (z, y, x): its centre, for larger images
MAX_FIELD = (64, 1024, 1024)
VERDICTS = ("consistent", "too narrow", "too wide", "inconclusive")


@dataclass(frozen=True)
class PSFCheck:
    """The result of :func:`check_psf_against_data`.

    Attributes
    ----------
    verdict : str
        One of :data:`VERDICTS`.
    ratio : float
        Best-fitting passband ratio ``s`` (data / PSF); 1 is a perfect match.
    interval : tuple of float
        Its 95 % profile-likelihood interval.
    psf_cutoff_nm : float
        Finest period the PSF passes (nm): ``1 / k_c``, ``k_c`` where its in-focus OTF falls
        to 1 % of the peak.
    signal_cutoff_nm : float
        Finest period where the fitted signal still stands above the noise (nm).
    psf_fwhm_nm : float
        Lateral FWHM of the given PSF's in-focus plane (nm).
    matched_fwhm_nm : float
        Lateral FWHM of the PSF that would match the data: ``psf_fwhm_nm / ratio``.
    tolerance : float
        The tolerance the verdict used.
    split_ratios : tuple of float
        The ratio fitted on the left, right, top and bottom halves of the field.
    note : str
        Why the check could not run (then the verdict is inconclusive and the numbers NaN).
    """

    verdict: str
    ratio: float
    interval: tuple[float, float]
    psf_cutoff_nm: float
    signal_cutoff_nm: float
    psf_fwhm_nm: float
    matched_fwhm_nm: float
    tolerance: float = TOLERANCE
    split_ratios: tuple[float, ...] = ()
    note: str = ""

    @property
    def warns(self) -> bool:
        """True when the PSF and the data disagree."""
        return self.verdict in ("too narrow", "too wide")

    def matched_na(self, wavelength_nm: float) -> float:
        """NA of the widefield PSF (0.514 lambda / NA) with :attr:`matched_fwhm_nm`."""
        return 0.5145 * wavelength_nm / self.matched_fwhm_nm

    def message(self) -> str:
        """One line for a microscopist: what was measured and what to do."""
        percent = abs(self.ratio - 1) * 100
        measured = (
            f"passband ratio data/PSF {self.ratio:.2f} "
            f"(95 % {self.interval[0]:.2f}-{self.interval[1]:.2f})"
        )
        if self.verdict == "too narrow":
            return (
                f"PSF check: the PSF looks about {percent:.0f} % too narrow for this image "
                f"({measured}): the data show no detail finer than about "
                f"{self.signal_cutoff_nm:.0f} nm while the PSF passes {self.psf_cutoff_nm:.0f} nm; "
                f"check the NA, the wavelength and both pixel sizes (a matching widefield PSF "
                f"has FWHM {self.matched_fwhm_nm:.0f} nm, this one {self.psf_fwhm_nm:.0f} nm)"
            )
        if self.verdict == "too wide":
            return (
                f"PSF check: the PSF looks about {percent:.0f} % too wide for this image "
                f"({measured}): the data hold detail the PSF cannot pass (its cut-off "
                f"{self.psf_cutoff_nm:.0f} nm); expect ringing; check the NA, the wavelength and "
                f"both pixel sizes (a matching widefield PSF has FWHM "
                f"{self.matched_fwhm_nm:.0f} nm, this one {self.psf_fwhm_nm:.0f} nm)"
            )
        if self.note:
            return f"PSF check: inconclusive ({self.note})"
        if self.verdict == "inconclusive":
            return (
                f"PSF check: inconclusive ({measured}): the signal fades into the noise at "
                f"{self.signal_cutoff_nm:.0f} nm, too far inside the PSF's cut-off "
                f"({self.psf_cutoff_nm:.0f} nm) for the data to confirm or refute the PSF"
            )
        return f"PSF check: the PSF fits the data ({measured}, tolerance {self.tolerance:.0%})"

    def to_dict(self) -> dict:
        """JSON-ready summary (numbers rounded, NaN as None)."""

        def num(x: float, digits: int = 3) -> float | None:
            return round(x, digits) if math.isfinite(x) else None

        return {
            "verdict": self.verdict,
            "ratio": num(self.ratio),
            "interval": [num(self.interval[0]), num(self.interval[1])],
            "psf_cutoff_nm": num(self.psf_cutoff_nm, 1),
            "signal_cutoff_nm": num(self.signal_cutoff_nm, 1),
            "psf_fwhm_nm": num(self.psf_fwhm_nm, 1),
            "matched_fwhm_nm": num(self.matched_fwhm_nm, 1),
            "tolerance": self.tolerance,
            "split_ratios": [num(r) for r in self.split_ratios],
            "note": self.note,
        }


# -- spectra -----------------------------------------------------------------------------------


def _frequencies(shape: tuple[int, ...], pixel_nm: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """``(|kz|, kr)`` of every DFT sample (cycles/nm); ``kz`` is zero for 2D."""
    axes = [np.fft.fftfreq(n, d) for n, d in zip(shape, pixel_nm)]
    grids = np.meshgrid(*axes, indexing="ij")
    kr = np.sqrt(grids[-1] ** 2 + grids[-2] ** 2)
    kz = np.abs(grids[0]) if len(shape) == 3 else np.zeros_like(kr)
    return kz, kr


def _windowed_power(image: np.ndarray) -> np.ndarray:
    """Periodogram of the mean-free image under a Hann window, normalised so that white noise
    of variance ``v`` has power ``v``."""
    data = np.asarray(image, np.float64)
    window = np.ones(())
    for n in data.shape:
        window = np.multiply.outer(window, np.hanning(n))
    data = (data - data.mean()) * window
    return np.abs(np.fft.fftn(data)) ** 2 / (window**2).sum()


def _bin_spectrum(
    power: np.ndarray, kz: np.ndarray, kr: np.ndarray, kr_max: float
) -> dict[str, np.ndarray]:
    """Mean power in (``|kz|`` plane, radial ring) bins; the number of samples in each."""
    ring = np.minimum((kr / kr_max * RADIAL_BINS).astype(int), RADIAL_BINS)
    planes, plane = np.unique(kz.ravel(), return_inverse=True)
    index = plane * (RADIAL_BINS + 1) + ring.ravel()
    size = planes.size * (RADIAL_BINS + 1)
    total = np.bincount(index, power.ravel(), size)
    count = np.bincount(index, minlength=size)
    sum_kr = np.bincount(index, kr.ravel(), size)
    keep = count > 0
    z_of = np.repeat(planes, RADIAL_BINS + 1)
    return {
        "power": total[keep] / count[keep],
        "count": count[keep].astype(float),
        "kr": sum_kr[keep] / count[keep],
        "kz": z_of[keep],
    }


def _otf_table(psf: PSF) -> RegularGridInterpolator:
    """``|OTF|^2`` of the PSF as a function of (``|kz|``, ``kr``) in cycles/nm, radially averaged
    (the PSF padded 4x laterally for fine frequency sampling)."""
    data = np.asarray(psf.data, np.float64)
    pad = [(0, 0)] * (data.ndim - 2) + [(n * 3 // 2, n * 3 // 2) for n in data.shape[-2:]]
    data = np.pad(data, pad)
    otf2 = np.abs(np.fft.fftn(np.fft.ifftshift(data))) ** 2
    otf2 /= otf2.flat[0]
    kz, kr = _frequencies(data.shape, psf.pixel_size_nm)
    kr_max = float(kr.max())
    binned = _bin_spectrum(otf2, kz, kr, kr_max)
    planes = np.unique(binned["kz"])
    centres = (np.arange(RADIAL_BINS + 1) + 0.5) * kr_max / RADIAL_BINS
    table = np.zeros((planes.size, centres.size))
    for i, z in enumerate(planes):
        sel = binned["kz"] == z
        table[i] = np.interp(centres, binned["kr"][sel], binned["power"][sel], right=0.0)
    if planes.size == 1:  # 2D: a second, identical row keeps the interpolator two-dimensional
        planes = np.array([0.0, 1.0])
        table = np.vstack([table, table])
    return RegularGridInterpolator(
        (planes, np.concatenate([[0.0], centres])),
        np.hstack([table[:, :1], table]),
        bounds_error=False,
        fill_value=0.0,
    )


def psf_cutoff(psf: PSF) -> float:
    """Lateral cut-off frequency of the PSF (cycles/nm): where its in-focus ``|OTF|`` (the
    ``kz``-integrated one in 3D is the one the planes see) falls below :data:`CUTOFF_LEVEL`."""
    table = _otf_table(psf)
    kr = np.linspace(0, table.grid[1][-1], 2000)
    otf = np.sqrt(table(np.stack([np.zeros_like(kr), kr], axis=1)))
    below = np.nonzero(otf < CUTOFF_LEVEL)[0]
    return float(kr[below[0]] if below.size else kr[-1])


# -- the fit -----------------------------------------------------------------------------------


def _fit_at_scale(
    bins: dict[str, np.ndarray], otf2: np.ndarray, k0: float, start: np.ndarray | None
) -> tuple[float, np.ndarray]:
    """Least-squares fit of the sample and noise parameters (log A, alpha, log N, and in 3D the
    log of an axial scale of the sample's spectrum) in log power, weighted by each bin's number
    of independent samples; returns the cost (half the chi-square) and the parameters."""
    kr2, kz2 = (bins["kr"] / k0) ** 2, (bins["kz"] / k0) ** 2
    log_p = np.log(bins["power"])
    weight = np.sqrt(bins["weight"])
    three = bool(kz2.any())

    def residual(p: np.ndarray) -> np.ndarray:
        # in 3D the sample may be laid out differently in depth (sheets, a thin cell): its
        # axial frequencies get their own scale exp(p[3])
        log_k = 0.5 * np.log(kr2 + np.exp(2 * p[3]) * kz2) if three else 0.5 * np.log(kr2)
        model = np.exp(p[0] - p[1] * log_k) * otf2 + np.exp(p[2])
        return (np.log(model) - log_p) * weight

    if start is None:
        start = np.array([log_p[:3].mean(), 2.0, np.log(np.median(bins["power"][-10:])), 0.0])
    # log A and log N within e^+-60 of the data's mean log power keep exp() finite
    centre = float(log_p.mean())
    lower = np.array([centre - 60, -1.0, centre - 60, -2.0])
    upper = np.array([centre + 60, 6.0, centre + 60, 2.0])
    n = 4 if three else 3
    fit = least_squares(
        residual,
        np.clip(start[:n], lower[:n] + 1e-6, upper[:n] - 1e-6),
        bounds=(lower[:n], upper[:n]),
        x_scale="jac",
    )
    return float(fit.cost), np.append(fit.x, np.zeros(4 - n))


def check_psf_against_data(
    image: np.ndarray,
    pixel_size_nm: tuple[float, ...],
    psf: PSF,
    tolerance: float = TOLERANCE,
) -> PSFCheck:
    """Compare the passband the image shows with the one the PSF implies.

    Parameters
    ----------
    image : numpy.ndarray
        One camera image ``YX`` or stack ``ZYX`` (raw counts; any offset is fine).
    pixel_size_nm : tuple of float
        The image's pixel size per axis (nm), ``(y, x)`` or ``(z, y, x)``.
    psf : PSF
        The checked PSF (:func:`zsdeconvnet.physics.psf.check_psf`), same dimensionality.
    tolerance : float
        Fraction by which the passband ratio may differ from 1 before a mismatch is reported.

    Returns
    -------
    PSFCheck
        The verdict, the fitted ratio and interval, and the cut-offs in nm.
    """
    image = np.asarray(image, np.float64)
    if image.ndim != psf.ndim or len(pixel_size_nm) != image.ndim:
        raise InputError(
            f"the PSF check needs a {psf.ndim}D image with {psf.ndim} pixel sizes, got shape "
            f"{image.shape} and {pixel_size_nm}"
        )
    image = _central_field(image)
    small = MIN_FIELD[image.ndim]
    if any(n < m for n, m in zip(image.shape, small)):
        nan = float("nan")
        fwhm = _psf_fwhm_nm(psf)
        note = f"the field {'x'.join(map(str, image.shape))} is smaller than the " + (
            f"{'x'.join(map(str, small))} the spectrum needs to tell"
        )
        return PSFCheck("inconclusive", nan, (nan, nan), nan, nan, fwhm, nan, tolerance, (), note)
    table = _otf_table(psf)
    kc = psf_cutoff(psf)
    nyquist = 1 / (2 * pixel_size_nm[-1])
    if kc >= nyquist:
        nan = float("nan")
        note = (
            f"the pixels ({pixel_size_nm[-1]:g} nm) sample coarser than the PSF passes: its "
            f"cut-off period, {1 / kc:.0f} nm or finer, is below the Nyquist period "
            f"{2 * pixel_size_nm[-1]:g} nm, so the image cannot show the PSF's width"
        )
        fwhm = _psf_fwhm_nm(psf)
        return PSFCheck(
            "inconclusive", nan, (nan, nan), 1 / kc, nan, fwhm, nan, tolerance, (), note
        )
    ratio, (lo, hi), p = _fit_ratio(image, tuple(pixel_size_nm), table, kc)
    # the interval above is exact only if the sample's spectrum is a power law; the spread of
    # the ratio between halves of the field (left, right, top, bottom) also measures how well
    # the model fits this sample, and widens the interval when they disagree
    halves = [_fit_ratio(part, tuple(pixel_size_nm), table, kc)[0] for part in _halves(image)]
    spread = SPLIT_FACTOR * float(np.std(np.log(halves), ddof=1)) / math.sqrt(2)
    lo, hi = min(lo, ratio * math.exp(-spread)), max(hi, ratio * math.exp(spread))
    signal_k = _signal_edge(table, ratio, p, LOW_CUT * kc, kc)
    fwhm = _psf_fwhm_nm(psf)
    if math.log(hi / lo) > 2 * MAX_INTERVAL or lo <= SCALES[0] or hi >= SCALES[-1]:
        verdict = "inconclusive"
    elif ratio < 1 - tolerance and hi < 1:
        verdict = "too narrow"
    elif ratio > 1 + tolerance and lo > 1:
        verdict = "too wide"
    elif lo <= 1 <= hi or abs(ratio - 1) <= tolerance:
        verdict = "consistent"
    else:
        verdict = "inconclusive"
    return PSFCheck(
        verdict=verdict,
        ratio=ratio,
        interval=(lo, hi),
        psf_cutoff_nm=1 / kc,
        signal_cutoff_nm=1 / signal_k,
        psf_fwhm_nm=fwhm,
        matched_fwhm_nm=fwhm / ratio,
        tolerance=tolerance,
        split_ratios=tuple(float(h) for h in halves),
    )


def _central_field(image: np.ndarray) -> np.ndarray:
    """At most :data:`MAX_FIELD` (the centre): the spectrum needs no more, and memory stays
    small for whole-slide images and long stacks."""
    limits = MAX_FIELD[-image.ndim :]
    box = tuple(
        slice(max(0, (n - m) // 2), max(0, (n - m) // 2) + min(n, m))
        for n, m in zip(image.shape, limits)
    )
    return image[box]


def _halves(image: np.ndarray) -> list[np.ndarray]:
    """Left, right, top and bottom halves of the field (every plane of a stack)."""
    h, w = image.shape[-2] // 2, image.shape[-1] // 2
    return [image[..., :, :w], image[..., :, w:], image[..., :h, :], image[..., h:, :]]


def _fit_ratio(
    image: np.ndarray,
    pixel_size_nm: tuple[float, ...],
    table: RegularGridInterpolator,
    kc: float,
) -> tuple[float, tuple[float, float], np.ndarray]:
    """Best passband ratio of one image, its 95 % profile-likelihood interval, and the
    sample and noise parameters at the best ratio."""
    kz, kr = _frequencies(image.shape, pixel_size_nm)
    bins = _bin_spectrum(_windowed_power(image), kz, kr, float(kr.max()))
    keep = (np.hypot(bins["kr"], bins["kz"]) > LOW_CUT * kc) & (bins["power"] > 0)
    bins = {key: value[keep] for key, value in bins.items()}
    # a Hann window correlates neighbouring samples (equivalent bandwidth 1.5 bins per axis)
    # and a real image's spectrum is symmetric: independent samples per bin
    bins["weight"] = np.maximum(bins["count"] / (2 * 1.5**image.ndim), 1.0)
    costs, params = _profile(bins, table, LOW_CUT * kc)
    best = int(np.argmin(costs))
    # a misfit (reduced chi-square above 1) widens the interval with it
    dof = max(len(bins["power"]) - 4, 1)
    spread = max(1.0, 2 * costs[best] / dof)
    inside = np.nonzero(2 * (costs - costs[best]) <= CONFIDENCE_CHI2 * spread)[0]
    interval = (float(SCALES[inside.min()]), float(SCALES[inside.max()]))
    return float(SCALES[best]), interval, params[best]


def _profile(
    bins: dict[str, np.ndarray], table: RegularGridInterpolator, k0: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The fit's cost at every ratio in :data:`SCALES`. Each fit starts from its neighbour's
    parameters, in both directions from the middle, keeping the lower cost, so the profile is
    not made jagged by fits that stop in different local minima."""
    otf2 = [table(np.stack([bins["kz"] / s, bins["kr"] / s], axis=1)) for s in SCALES]
    costs = np.full(SCALES.size, np.inf)
    params: list[np.ndarray] = [np.zeros(4)] * SCALES.size
    middle = SCALES.size // 2
    for order in (range(middle, SCALES.size), range(middle, -1, -1)):
        start = None
        for i in order:
            cost, p = _fit_at_scale(bins, otf2[i], k0, start)
            if cost < costs[i]:
                costs[i], params[i] = cost, p
            start = params[i]
    return costs, params


def _signal_edge(
    table: RegularGridInterpolator, ratio: float, p: np.ndarray, k0: float, kc: float
) -> float:
    """Highest lateral frequency (in focus) where the fitted signal is at least the noise."""
    kr = np.linspace(k0, 2 * kc, 1000)
    otf2 = table(np.stack([np.zeros_like(kr), kr / ratio], axis=1))
    signal = np.exp(p[0] - p[1] * np.log(kr / k0)) * otf2
    above = np.nonzero(signal >= np.exp(p[2]))[0]
    return float(kr[above[-1]] if above.size else k0)


def _psf_fwhm_nm(psf: PSF) -> float:
    data = psf.data
    if data.ndim == 3:
        data = data[int(np.argmax(data.reshape(data.shape[0], -1).max(axis=1)))]
    return fwhm_px(data) * psf.pixel_size_nm[-1]
