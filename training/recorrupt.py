"""Recorruption: two independent noisy copies from one noisy image (METHOD.md section 2).

With ``z ~ N(0, 1)`` (one draw shared by both outputs) and the noise variance model
``sigma^2 = beta1 * max(H(y) - b, 0) + beta2`` (``H`` a 5x5 mean filter, ``b`` the camera
background), the input ``y + alpha * sigma * z`` and the target ``y - sigma * z / alpha`` carry
noises whose covariance is ``var(n) - sigma^2``: zero when the model matches the camera
(Pang et al. 2021, "Recorrupted-to-Recorrupted"). Images are in camera counts (ADU), ``YX``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

log = logging.getLogger(__name__)

#: Pixels whose smoothed, range-normalised intensity is below this are background.
BACKGROUND_FRACTION = 0.005
MIN_BACKGROUND_PIXELS = 500


@dataclass(frozen=True)
class NoiseModel:
    """Camera noise parameters estimated from the image (ADU)."""

    background: float
    beta2: float

    def describe(self) -> str:
        return f"background {self.background:.4g} ADU, read-noise variance beta2 {self.beta2:.4g}"


def local_mean(y: np.ndarray) -> np.ndarray:
    """``H(y)``: the 5x5 mean filter of the last two axes."""
    size = (1,) * (y.ndim - 2) + (5, 5)
    return uniform_filter(np.asarray(y, np.float64), size=size, mode="reflect")


def estimate_noise(y: np.ndarray, background: float | None = None, gain: float = 1.0) -> NoiseModel:
    """Estimate the camera background ``b`` (if not given) and ``beta2`` from background pixels.

    Background pixels are where the smoothed image, normalised to its range, is below 0.5 %
    (at least the darkest 500). To keep the estimate unbiased, the selection looks only at the
    even columns (smoothed) and the statistics use only the odd columns, whose noise is
    independent of it. ``b`` defaults to their mean; ``beta2`` is their variance around the 5x5
    mean (corrected for the filter) minus the shot noise of any signal above ``b``.
    """
    y = np.asarray(y, np.float64)
    even, odd = y[:, 0::2], y[:, 1::2]
    width = odd.shape[1]
    coarse = gaussian_filter(even, (4.0, 2.0), mode="reflect")[:, :width]
    residual = (y - local_mean(y))[:, 1::2]
    lo, hi = np.percentile(coarse, [0.01, 99.99])
    mask = (coarse - lo) / max(hi - lo, 1e-12) < BACKGROUND_FRACTION
    if mask.sum() < MIN_BACKGROUND_PIXELS:
        k = min(MIN_BACKGROUND_PIXELS, coarse.size - 1)
        mask = coarse <= np.partition(coarse.ravel(), k)[k]
    bg_mean = float(odd[mask].mean())
    b = bg_mean if background is None else float(background)
    beta2 = float((residual[mask] ** 2).mean()) * 25.0 / 24.0 - gain * max(bg_mean - b, 0.0)
    beta2 = max(beta2, 1e-6 * max(hi - lo, 1e-12) ** 2)
    return NoiseModel(background=b, beta2=beta2)


def recorrupt(
    y: np.ndarray,
    noise: NoiseModel,
    alpha: float,
    beta1: float,
    beta2_scale: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One recorrupted pair ``(input, target)`` from a noisy image ``y`` (ADU).

    Parameters
    ----------
    y : numpy.ndarray
        Noisy image, ``YX`` (or ``...YX``: the filter runs on the last two axes).
    noise : NoiseModel
        Background and read-noise variance.
    alpha, beta1, beta2_scale : float
        This pair's draws (METHOD.md: alpha, beta1 ~ U[0.5, 1.5], beta2 ~ estimate x U[0.8, 1.2]).
    rng : numpy.random.Generator
        Source of ``z``.
    """
    y = np.asarray(y, np.float64)
    sigma = np.sqrt(
        beta1 * np.maximum(local_mean(y) - noise.background, 0) + beta2_scale * noise.beta2
    )
    z = rng.standard_normal(y.shape)
    return (y + alpha * sigma * z).astype(np.float32), (y - sigma * z / alpha).astype(np.float32)
