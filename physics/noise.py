"""The camera's gain from one image: noise variance against intensity (photon transfer).

A camera pixel in ADU carries ``g * (photo-electrons) + read noise + offset``, so its variance
rises with its mean: ``var = g * (mean - offset) + read variance``, and the slope ``g`` is the
gain in ADU per photo-electron (the ``beta1`` of recorruption, ``training/recorrupt.py``). The
paper's recorruption assumes about 1 ADU per electron; images from cameras with another gain
(EMCCDs: tens to hundreds), rescaled images (the napari nuclei stack spans 0-65535) or images
converted to photons do not have it. Measured here from the image itself, as a photon-transfer
curve from one frame instead of from a series of flat fields:

- noise samples: the image filtered with the product of two second differences,
  ``[1, -2, 1] (x) [1, -2, 1] / 6`` (its weights' squares sum to 1, so white noise keeps its
  variance; it cancels anything constant, or linear along either axis, so smooth structure
  blurred by the PSF leaks into it far less than into a neighbour difference);
- intensity: the 5x5 mean around each sample;
- samples binned by intensity (equal widths), each bin's variance taken over the samples within
  five robust standard deviations (the structure that still leaks in, at edges and isolated
  bright spots, left out);
- a straight line through the bins, weighted by each variance's own uncertainty; the slope is
  the gain, with a standard error from the fit.

Why by hand: no maintained Python package fits a single-image photon-transfer curve (the
known method, Foi et al. 2008, is published as MATLAB code). Arrays are ``YX`` or ``ZYX``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import convolve, uniform_filter

#: Second difference along y times along x, unit noise gain (squares of the weights sum to 1)
KERNEL = np.outer([1.0, -2.0, 1.0], [1.0, -2.0, 1.0]) / 6.0
#: Intensity bins (equal numbers of samples) of the photon-transfer curve
BINS = 16
#: Bins are at least this many times as wide as the scatter of a flat region's 5x5 mean
BIN_WIDTH = 8.0
#: Integer data whose dark noise (standard deviation, ADU) is below this are not measured: the
#: rounding to integers then shapes the noise (in a check while building this, not kept as a
#: script, a simulated camera at 0.1 ADU per electron read 3.2x its gain)
MIN_INTEGER_NOISE = 1.0
#: Fewest samples in a bin for it to count
MIN_BIN = 200
#: Most samples used (more are thinned evenly; the napari nuclei stack gives 3.7 M)
MAX_SAMPLES = 4_000_000
#: Fewest samples in the image for a measurement
MIN_SAMPLES = 4000
#: A slope measured to a standard error above this fraction of itself is not used (recorruption
#: draws beta1 over +-50 % of the gain anyway)
MAX_RELATIVE_ERROR = 0.35
#: MAD to standard deviation for Gaussian noise
MAD_TO_SD = 1.4826
#: Samples further than this many robust standard deviations from a bin's median are dropped
CLIP = 5.0


@dataclass(frozen=True)
class GainEstimate:
    """The photon-transfer fit of one image: ``gain`` (ADU per photo-electron, the slope),
    ``error`` (its standard error), ``intensity_span`` (ADU between the lowest and highest
    bin) and ``reason`` (empty when the slope is trustworthy, else why not)."""

    gain: float
    error: float
    intensity_span: float
    reason: str = ""

    @property
    def reliable(self) -> bool:
        return not self.reason

    def describe(self) -> str:
        text = f"gain {self.gain:.3g} +- {self.error:.2g} ADU per photo-electron"
        return text if self.reliable else f"{text} (not used: {self.reason})"


def _samples(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(intensity, noise sample) pairs of one ``YX`` plane, its border left out; saturated
    pixels (the plane's maximum, where it repeats) are dropped with their neighbours."""
    plane = np.asarray(plane, np.float64)
    noise = convolve(plane, KERNEL, mode="nearest")[3:-3, 3:-3]
    mean = uniform_filter(plane, 5, mode="nearest")[3:-3, 3:-3]
    top = plane.max()
    keep = np.ones(noise.shape, bool)
    if (plane == top).sum() > 1:
        clipped = uniform_filter((plane == top).astype(np.float64), 5)[3:-3, 3:-3] > 0
        keep &= ~clipped
    return mean[keep], noise[keep]


def estimate_gain(images: np.ndarray | Sequence[np.ndarray], bins: int = BINS) -> GainEstimate:
    """The camera gain (ADU per photo-electron) from the noise of images from one camera.

    Parameters
    ----------
    images : numpy.ndarray or sequence of numpy.ndarray
        Raw camera data, ``YX`` or ``ZYX`` (each plane measured on its own, the samples of all
        pooled), in ADU as the camera gave them (an offset does not matter; a filtered image's
        noise is no longer independent between pixels, which lowers the slope).
    bins : int
        Intensity bins of the photon-transfer curve (fewer where the intensities span less
        than ``bins`` times ``BIN_WIDTH`` times the noise of a 5x5 mean).

    Returns
    -------
    GainEstimate
        The slope and its standard error; ``reason`` says why it should not be used (too few
        pixels, no intensity range to fit, a slope not above zero, or too uncertain).
    """
    stacks = [images] if isinstance(images, np.ndarray) else list(images)
    planes = [p for s in stacks for p in np.asarray(s).reshape(-1, *np.shape(s)[-2:])]
    planes = [p for p in planes if min(p.shape) >= 16]
    if not planes:
        return GainEstimate(float("nan"), float("inf"), 0.0, "no image of 16 px or more")
    pairs = [_samples(p) for p in planes]
    mean = np.concatenate([m.ravel() for m, _ in pairs])
    noise = np.concatenate([n.ravel() for _, n in pairs])
    if mean.size < MIN_SAMPLES:
        return GainEstimate(float("nan"), float("inf"), 0.0, f"under {MIN_SAMPLES} pixels")
    if mean.size > MAX_SAMPLES:  # evenly thinned: the medians of 30 M samples took seconds
        step = -(-mean.size // MAX_SAMPLES)
        mean, noise = mean[::step], noise[::step]
    # Bins of equal width, and at least BIN_WIDTH times the scatter of a flat region's 5x5
    # mean: that scatter is partly read noise, which the noise samples' variance does not
    # follow, so bins cutting it into steps see a flatter curve than the true one (in checks
    # while building this, not kept as scripts, the slope fell to 0.4-0.8 of a known gain on
    # simulated beads and empty fields); this way the background is about one bin. The
    # scatter: the darkest fifth's noise over 5 (a mean of 25 pixels).
    dark = noise[mean <= np.quantile(mean, 0.2)]
    scatter = MAD_TO_SD * np.median(np.abs(dark - np.median(dark))) / 5.0
    integers = all(np.array_equal(p, np.round(p)) for p in planes)
    if integers and 5.0 * scatter < MIN_INTEGER_NOISE:
        return GainEstimate(
            float("nan"),
            float("inf"),
            0.0,
            f"the noise ({5 * scatter:.2g} ADU) is too close to the data's integer step",
        )
    lo, hi = np.quantile(mean, [0.005, 0.999])
    inside = (mean >= lo) & (mean <= hi)  # a few hot or saturated pixels do not set the bins
    mean, noise = mean[inside], noise[inside]
    width = max((hi - lo) / bins, BIN_WIDTH * scatter, 1e-12)
    which = np.floor((mean - lo) / width).astype(int)
    centres, variances, weights = [], [], []
    for b in range(int(which.max()) + 1):
        n = noise[which == b]
        if n.size < MIN_BIN:
            continue
        # the variance of the samples within CLIP robust deviations: the median absolute
        # deviation alone reads a bin's mixture of variances (pixels of equal mean on a peak
        # and on a flank) low (0.85 of a known gain on simulated blobs, in a check while
        # building this); clipping drops the few samples that structure still leaks into
        centre = np.median(n)
        sd = MAD_TO_SD * np.median(np.abs(n - centre))
        n = n[np.abs(n - centre) <= CLIP * max(sd, 1e-12)]
        var = float(np.mean((n - centre) ** 2))
        if var <= 0:  # noise below the data's quantisation step: nothing to read here
            continue
        centres.append(mean[which == b].mean())
        variances.append(var)
        # a variance from n Gaussian samples has a standard error of var * sqrt(2 / n)
        weights.append(n.size / var**2)
    centres, variances, weights = map(np.asarray, (centres, variances, weights))
    span = float(centres.max() - centres.min()) if centres.size else 0.0
    if centres.size < 4 or span <= 0:
        return GainEstimate(float("nan"), float("inf"), span, "no range of intensities to fit")
    design = np.stack([centres, np.ones_like(centres)], axis=1)
    w = weights / weights.sum()
    normal = design.T @ (design * w[:, None])
    slope, intercept = np.linalg.solve(normal, design.T @ (w * variances))
    residual = variances - design @ [slope, intercept]
    # the scatter about the line sets the error (the weights give only relative precision)
    dof = max(centres.size - 2, 1)
    scale = float((w * residual**2).sum() / dof)
    error = float(np.sqrt(np.linalg.inv(normal)[0, 0] * scale))
    if slope <= 0:
        return GainEstimate(float(slope), error, span, "the noise does not grow with intensity")
    if error > MAX_RELATIVE_ERROR * slope:
        return GainEstimate(
            float(slope), error, span, f"uncertain to {100 * error / slope:.0f} % of itself"
        )
    return GainEstimate(float(slope), error, span)
