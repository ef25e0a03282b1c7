"""Whole-frame intensity normalisation (never per tile: per-tile statistics make seams)."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .io import release_pages
from .metadata import Normalization

#: Frames larger than this many pixels get their percentiles from a regular subsample,
#: so memory stays bounded for images larger than RAM. Min/max (0 and 100) are always exact.
MAX_PERCENTILE_SAMPLES = 1 << 24
_CHUNK_ROWS = 256
_RELEASE_BYTES = 256 * 2**20


def _iter_chunks(frame: np.ndarray):
    """Yield float32 slabs of ``frame`` along its first axis (bounded memory on memmaps)."""
    step = max(1, _CHUNK_ROWS * 4096 // max(1, int(np.prod(frame.shape[1:]))))
    chunks = getattr(frame, "chunks", None)  # zarr: whole chunk rows, each decoded once
    if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], int):
        step = max(chunks[0], step // chunks[0] * chunks[0])
    read = 0
    for i in range(0, frame.shape[0], step):
        chunk = np.asarray(frame[i : i + step], dtype=np.float32)
        read += chunk.nbytes
        if read > _RELEASE_BYTES:  # a memory map: give its read pages back as we go
            release_pages(frame)
            read = 0
        yield chunk


def frame_range(frame: np.ndarray, recipe: Normalization, source: str) -> tuple[float, float]:
    """Return ``(low, high)`` intensities of one frame for ``recipe``.

    Parameters
    ----------
    frame : numpy.ndarray
        One frame, spatial axes only (may be a memory map).
    recipe : Normalization
        Percentiles to use.
    source : str
        How to name the frame in error messages (file and frame index).

    Raises
    ------
    InputError
        If the frame contains NaN or Inf, or is constant.
    """
    lo, hi = np.inf, -np.inf
    for chunk in _iter_chunks(frame):
        if not np.isfinite(chunk).all():
            raise InputError(
                f"{source} contains NaN or Inf pixels; replace them (e.g. with the background "
                "value) before processing"
            )
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    if recipe.low > 0.0 or recipe.high < 100.0:
        step = max(1, int(np.ceil((frame.size / MAX_PERCENTILE_SAMPLES) ** (1 / frame.ndim))))
        sample = np.asarray(frame[(slice(None, None, step),) * frame.ndim], dtype=np.float32)
        lo, hi = (float(v) for v in np.percentile(sample, [recipe.low, recipe.high]))
    if not hi > lo:
        raise InputError(
            f"{source} is constant (all pixels {lo:g}) after percentile clipping; there is "
            "nothing to restore (check that the right file or channel was given)"
        )
    return lo, hi


def normalize(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` to ``[0, 1]`` (float32, no clipping)."""
    return ((np.asarray(x, dtype=np.float32) - lo) / (hi - lo)).astype(np.float32, copy=False)


def denormalize(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Inverse of :func:`normalize`: back to input intensity units."""
    return (y * np.float32(hi - lo) + np.float32(lo)).astype(np.float32, copy=False)
