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
    """Camera noise parameters (ADU): ``background`` and ``beta2`` estimated from the image,
    ``gain`` (ADU per photo-electron, beta1's centre) and where it came from: ``set`` (by the
    user), ``measured`` (from the images' noise) or ``assumed`` (1: it could not be measured)."""

    background: float
    beta2: float
    gain: float = 1.0
    gain_source: str = "set"

    def describe(self) -> str:
        return (
            f"background {self.background:.4g} ADU, read-noise variance beta2 {self.beta2:.4g}, "
            f"gain {self.gain:.3g} ADU per photo-electron ({self.gain_source})"
        )


#: A gain set by the user this many times off the measured one (either way) gets a warning
GAIN_MISMATCH = 3.0
#: The gain is measured on at most this many frames of a series, evenly spread
GAIN_FRAMES = 8


def resolve_gain(frames: list[np.ndarray], gain: float | None) -> tuple[float, str]:
    """The gain recorruption uses and where it came from (see :class:`NoiseModel`).

    ``gain`` when it is set (with a warning when the frames' noise says otherwise by more than
    ``GAIN_MISMATCH`` times); else measured from the noise of all ``frames`` together (one
    camera: :func:`physics.noise.estimate_gain`); else 1 ADU per photo-electron, the paper's
    assumption, with the reason logged. Why it matters: recorruption adds noise of variance
    ``gain x signal``; with a gain 100x too low (a camera at high gain, a rescaled image) it
    adds a tenth of the noise the image has, and the network learns to keep the noise.
    """
    from ..physics.noise import estimate_gain

    # one camera: a few frames spread over a long series measure it as well as all of them
    step = max(1, -(-len(frames) // GAIN_FRAMES))
    found = estimate_gain(frames[::step])
    if gain is not None:
        ratio = found.gain / gain if found.reliable else 1.0
        if not 1 / GAIN_MISMATCH <= ratio <= GAIN_MISMATCH:
            log.warning(
                "gain %.3g ADU per photo-electron is set, but the image's noise says %s: "
                "leave --gain out to use the measured one",
                gain,
                found.describe(),
            )
        return float(gain), "set"
    if found.reliable:
        return found.gain, "measured"
    log.warning(
        "the camera gain could not be measured from the image (%s); assuming 1 ADU per "
        "photo-electron: give --gain if you know it",
        found.reason,
    )
    return 1.0, "assumed"


def local_mean(y: np.ndarray) -> np.ndarray:
    """``H(y)``: the 5x5 mean filter of the last two axes."""
    size = (1,) * (y.ndim - 2) + (5, 5)
    return uniform_filter(np.asarray(y, np.float64), size=size, mode="reflect")


def estimate_noise(
    y: np.ndarray, background: float | None = None, gain: float = 1.0, gain_source: str = "set"
) -> NoiseModel:
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
    return NoiseModel(background=b, beta2=beta2, gain=gain, gain_source=gain_source)


def noise_models(
    frames: list[np.ndarray], background: float | None, gain: float | None
) -> list[NoiseModel]:
    """One :class:`NoiseModel` per ``YX`` frame (camera background and ``beta2`` of each), with
    the gain of all of them together (:func:`resolve_gain`: one camera)."""
    resolved = resolve_gain(frames, gain)
    return [estimate_noise(f, background, *resolved) for f in frames]


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
