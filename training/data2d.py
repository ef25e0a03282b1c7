"""Training pairs generated on the fly from the noisy frames themselves.

Each pair: a frame is chosen, a patch centre is drawn preferentially on foreground (a blurred
foreground-minus-background map), a window 1.5x the patch is cut (so any rotation still fills
the patch), recorrupted into input and target, rotated by a random angle and flipped (the same
transform for both: linear maps keep the two noises uncorrelated), cropped, and normalised with
the frame's whole-image percentiles (as the runtime does). Arrays are ``YX``, values in ADU.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.ndimage import gaussian_filter, rotate

from ..runtime.errors import InputError
from .config import TrainConfig
from .pairs_torch import PairDraw
from .recorrupt import NoiseModel, noise_models, recorrupt

log = logging.getLogger(__name__)

BACKGROUND_SHARE = 0.1  # part of the sampling weight spread uniformly (background patches too)


def foreground_weights(frame: np.ndarray, patch: int) -> np.ndarray:
    """Sampling weights for patch centres: blurred foreground-minus-background, plus a floor."""
    frame = np.asarray(frame, np.float64)
    detail = gaussian_filter(frame, 2) - gaussian_filter(frame, max(8, patch / 4))
    weights = gaussian_filter(np.clip(detail, 0, None), patch / 8)
    total = weights.sum()
    weights = weights / total if total > 0 else np.full_like(weights, 1 / weights.size)
    weights = (1 - BACKGROUND_SHARE) * weights + BACKGROUND_SHARE / weights.size
    return np.cumsum(weights.ravel())


class PatchSampler:
    """Draws normalised (input, target) patch pairs from noisy frames.

    Parameters
    ----------
    frames : list of numpy.ndarray
        Noisy ``YX`` frames in camera counts (ADU).
    cfg : TrainConfig
        Patch size, recorruption ranges, normalisation percentiles.
    rng : numpy.random.Generator
        The only source of randomness (its state is checkpointed).
    """

    def __init__(self, frames: list[np.ndarray], cfg: TrainConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.rng = rng
        self.frames = [np.asarray(f, np.float32) for f in frames]
        for f in self.frames:
            if min(f.shape) < cfg.patch_size:
                raise InputError(
                    f"image of {f.shape[0]}x{f.shape[1]} px is smaller than the training patch "
                    f"({cfg.patch_size} px); use --patch-size {self._fit(min(f.shape))} or larger "
                    "images"
                )
        self.noise: list[NoiseModel] = noise_models(self.frames, cfg.background, cfg.gain)
        self.ranges = [
            tuple(float(v) for v in np.percentile(f, [cfg.norm_low, cfg.norm_high]))
            for f in self.frames
        ]
        for lo, hi in self.ranges:
            if not hi > lo:
                raise InputError("a training frame is constant; nothing to learn from it")
        self.cdfs = [foreground_weights(f, cfg.patch_size) for f in self.frames]
        self.window = window_size(cfg)

    def _fit(self, size: int) -> int:
        m = self.cfg.size_multiple
        return max(m, (size - 2 * self.cfg.pad_xy) // m * m)

    def _window(self, k: int) -> np.ndarray:
        frame = self.frames[k]
        cy, cx = draw_centre(self.cdfs[k], frame.shape, self.rng)
        return cut_window(frame, cy, cx, self.window, clamp=True)

    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """One normalised ``(input, target)`` pair, each ``patch x patch`` float32."""
        cfg, rng = self.cfg, self.rng
        k = int(rng.integers(len(self.frames)))
        window = self._window(k)
        x, y = recorrupt(
            window,
            self.noise[k],
            alpha=rng.uniform(*cfg.alpha_range),
            beta1=self.noise[k].gain * rng.uniform(*cfg.beta1_range),
            beta2_scale=rng.uniform(*cfg.beta2_scale_range),
            rng=rng,
        )
        return augment_pair(x, y, self.ranges[k], cfg, rng)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs as ``[n, 1, P, P]`` arrays (input, target)."""
        return stack_pairs([self.pair() for _ in range(n)])

    def draw(self) -> PairDraw:
        """The random choices of one pair and its window, for :func:`pairs_torch.make_pairs`
        (which does on the training device what :meth:`pair` does with numpy)."""
        cfg, rng = self.cfg, self.rng
        k = int(rng.integers(len(self.frames)))
        return PairDraw(
            window=self._window(k),
            noise=self.noise[k],
            value_range=self.ranges[k],
            alpha=rng.uniform(*cfg.alpha_range),
            beta1=self.noise[k].gain * rng.uniform(*cfg.beta1_range),
            beta2_scale=rng.uniform(*cfg.beta2_scale_range),
            angle=rng.uniform(0, 360) if cfg.rotation else 0.0,
            turns=int(rng.integers(4)),
            flip=bool(rng.integers(2)),
            z_seed=int(rng.integers(2**63)),
        )


def window_size(cfg: TrainConfig) -> int:
    """Side of the window cut around a centre: 1.5x the patch when rotating (any angle)."""
    return int(math.ceil(cfg.patch_size * 1.5 / 2) * 2) if cfg.rotation else cfg.patch_size


def draw_centre(cdf: np.ndarray, shape: tuple[int, int], rng: np.random.Generator):
    """A patch centre ``(y, x)`` drawn from the cumulative weights of :func:`foreground_weights`."""
    idx = int(np.searchsorted(cdf, rng.random() * cdf[-1]))
    return np.unravel_index(min(idx, cdf.size - 1), shape)


def cut_window(image: np.ndarray, cy: int, cx: int, size: int, clamp: bool = False) -> np.ndarray:
    """A ``size x size`` window centred on ``(cy, cx)``, mirrored where it passes the edges
    (``clamp``: repeat the first row and column instead of mirroring at the near edges)."""
    half = size // 2
    ys, xs = np.arange(cy - half, cy - half + size), np.arange(cx - half, cx - half + size)
    ys, xs = (np.clip(ys, 0, None), np.clip(xs, 0, None)) if clamp else (np.abs(ys), np.abs(xs))
    ys = np.where(ys >= image.shape[0], 2 * image.shape[0] - 2 - ys, ys)
    xs = np.where(xs >= image.shape[1], 2 * image.shape[1] - 2 - xs, xs)
    return image[np.ix_(ys, xs)]


def augment_pair(
    x: np.ndarray,
    y: np.ndarray,
    value_range: tuple[float, float],
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The same random rotation, crop to the patch, quarter turns and flip for input ``x`` and
    target ``y`` (windows of :func:`window_size`), then both normalised with ``value_range``
    (the image's percentiles). Returns ``patch x patch`` float32 arrays."""
    p = cfg.patch_size
    if cfg.rotation:
        angle = rng.uniform(0, 360)
        x = rotate(x, angle, reshape=False, order=1, mode="reflect")
        y = rotate(y, angle, reshape=False, order=1, mode="reflect")
    o = (x.shape[0] - p) // 2
    x, y = x[o : o + p, o : o + p], y[o : o + p, o : o + p]
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    x, y = np.rot90(x, turns), np.rot90(y, turns)
    if flip:
        x, y = x[:, ::-1], y[:, ::-1]
    lo, hi = value_range
    scale = 1.0 / (hi - lo)
    return ((x - lo) * scale).astype(np.float32), ((y - lo) * scale).astype(np.float32)


def stack_pairs(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs as ``[n, 1, P, P]`` arrays (inputs, targets)."""
    return (np.stack([a for a, _ in pairs])[:, None], np.stack([b for _, b in pairs])[:, None])
