"""Tile plans: how an image is cut into overlapping, padded, size-aligned tiles and stitched.

A tile is described by a small value object (:class:`Tile`) rather than index arithmetic
spread over callers. All coordinates are in input-image pixels, spatial axes only, array order
(``YX`` or ``ZYX``). Coordinates outside the image are legal: they are filled by padding
(``reflect`` or ``edge``), defined once for the whole image so that every tile sees the same
padded image an untiled pass would.

Why tiled == untiled exactly: every tile starts at ``-halo + k * size_multiple`` in image
coordinates, the same alignment as the untiled pass, so pooling grids coincide; and every kept
pixel is at least ``halo`` (the network's receptive-field radius) away from the tile edge, so no
kept pixel sees the tile border.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: Default tile size in y and x (input px): with the effective halo a 1024x1024 frame took 3.4 s
#: at 1.1 GB peak, against 2.7 s at 2.9 GB for tile 1024 (benchmarks/RESULTS.md, "Effective
#: halo"): a laptop's memory; ``predict --tile`` and ``PredictOptions.tile`` both use it
DEFAULT_TILE = 512

PAD_MODES = ("reflect", "edge")
#: Named tile contexts (``PredictOptions.overlap``): the halo measured at export
#: (``runtime.reach``), or the exact one (the receptive-field radius)
OVERLAPS = ("effective", "exact")


@dataclass(frozen=True)
class Tile:
    """One tile of a plan.

    Attributes
    ----------
    start : tuple of int
        Image coordinate of the tile's first pixel (may be negative: padding).
    inner : tuple of slice
        The part of the image this tile is responsible for (image coordinates).
    crop : tuple of slice
        The same region in the tile's own coordinates.
    """

    start: tuple[int, ...]
    inner: tuple[slice, ...]
    crop: tuple[slice, ...]

    def scaled(self, scale: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Destination (output image) and source (tile output) slices at ``scale``."""
        dest = tuple(slice(s.start * f, s.stop * f) for s, f in zip(self.inner, scale))
        src = tuple(slice(s.start * f, s.stop * f) for s, f in zip(self.crop, scale))
        return dest, src


@dataclass(frozen=True)
class TilePlan:
    """All tiles of one image; every tile has the same shape so tiles can be batched."""

    image_shape: tuple[int, ...]
    tile_shape: tuple[int, ...]
    halo: tuple[int, ...]
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def _plan_axis(
    size: int, tile: int | None, halo: int, multiple: int, lead: int
) -> tuple[int, list[int]]:
    """Return (tile length, inner starts) for one axis; ``tile`` is the largest inner (kept)
    size: the axis is split into as few tiles as that allows, of equal size (on the size
    multiple), so no tile is mostly padding (a 2160-px axis at tile 512: 5 tiles of 432, not
    4 of 512 and a fifth that keeps 112)."""
    whole = _round_up(size + lead + halo, multiple)
    if tile is None:
        return whole, [0]
    inner = max(multiple, tile // multiple * multiple)
    count = math.ceil(size / inner)
    inner = _round_up(math.ceil(size / count), multiple)
    length = _round_up(inner + lead + halo, multiple)
    if length >= whole or inner >= size:
        return whole, [0]
    return length, list(range(0, size, inner))


def plan_tiles(
    image_shape: Sequence[int],
    tile_shape: Sequence[int | None],
    halo: Sequence[int],
    size_multiple: Sequence[int],
    lead: Sequence[int] | None = None,
) -> TilePlan:
    """Cut an image into tiles.

    Parameters
    ----------
    image_shape : sequence of int
        Spatial shape of the image (``YX`` or ``ZYX``).
    tile_shape : sequence of int or None
        Size of the region each tile restores, per axis (``None``: one tile along that axis),
        rounded down to a multiple of ``size_multiple``. Each tile adds ``halo`` on both sides,
        so the network sees ``tile + 2 * halo`` (rounded up to the multiple), never more than
        the whole padded image.
    halo : sequence of int
        Context kept around each tile's inner region, per axis (the receptive-field radius).
    size_multiple : sequence of int
        Network size multiple per axis.
    lead : sequence of int, optional
        Context before each tile's inner region, per axis, when it differs from the context
        after it (``halo``, then at least): tiles start at ``inner start - lead``, so ``lead``
        sets the tiles' alignment to the pooling grid (``runtime.staged``). Default ``halo``.

    Returns
    -------
    TilePlan
    """
    image_shape = tuple(int(s) for s in image_shape)
    if any(s < 1 for s in image_shape):
        raise InputError(f"image of shape {image_shape} is empty")
    lead = tuple(int(v) for v in (halo if lead is None else lead))
    lengths, starts = [], []
    for size, tile, h, m, b in zip(image_shape, tile_shape, halo, size_multiple, lead):
        length, axis_starts = _plan_axis(size, tile, int(h), int(m), b)
        lengths.append(length)
        starts.append(axis_starts)
    inners = []
    for size, axis_starts in zip(image_shape, starts):
        step = axis_starts[1] - axis_starts[0] if len(axis_starts) > 1 else size
        inners.append([(s, min(s + step, size)) for s in axis_starts])
    tiles = []
    for combo in itertools.product(*inners):
        start = tuple(lo - b for (lo, _), b in zip(combo, lead))
        inner = tuple(slice(lo, hi) for lo, hi in combo)
        crop = tuple(slice(b, b + hi - lo) for (lo, hi), b in zip(combo, lead))
        tiles.append(Tile(start=start, inner=inner, crop=crop))
    return TilePlan(image_shape, tuple(lengths), tuple(int(h) for h in halo), tuple(tiles))


def _axis_indices(start: int, length: int, size: int, mode: str) -> np.ndarray:
    """Image indices that fill ``[start, start + length)`` with padding outside ``[0, size)``."""
    idx = np.arange(start, start + length)
    if mode == "edge" or size == 1:
        return np.clip(idx, 0, size - 1)
    if mode == "reflect":  # numpy's 'reflect': mirror about the edge pixel, period 2(size-1)
        period = 2 * (size - 1)
        idx = np.mod(idx, period)
        return np.where(idx >= size, period - idx, idx)
    raise InputError(f"unknown padding mode {mode!r}; choose one of {PAD_MODES}")


def read_tile(
    image: np.ndarray, start: Sequence[int], shape: Sequence[int], mode: str
) -> np.ndarray:
    """Read one padded tile from a (possibly memory-mapped) array.

    Only the in-bounds bounding box is read from ``image``; padding is filled by index
    mapping, identical to padding the whole image first.
    """
    index = [_axis_indices(s, n, size, mode) for s, n, size in zip(start, shape, image.shape)]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
    block = np.asarray(image[box], dtype=np.float32)
    local = [i - b.start for i, b in zip(index, box)]
    return block[np.ix_(*local)]


class TileReader:
    """Reads the padded tiles of one plan from float32 frames of one shape into given arrays,
    allocating nothing per tile (for streams of frames: ``runtime.restorer``).

    Parameters
    ----------
    shape : tuple of int
        The frames' spatial shape.
    starts : sequence of tuple of int
        Each tile's first pixel in frame coordinates (negative or past the end: padding).
    tile_shape : tuple of int
        The tiles' shape.
    mode : str
        ``reflect`` or ``edge`` padding, as :func:`read_tile`.
    """

    def __init__(self, shape, starts, tile_shape, mode: str):
        self.indices = [
            [_axis_indices(s, n, size, mode) for s, n, size in zip(start, tile_shape, shape)]
            for start in starts
        ]
        self._rows = np.empty((tile_shape[0], *shape[1:]), np.float32)
        self._rows2 = None
        if len(shape) == 3:
            self._rows2 = np.empty((tile_shape[0], tile_shape[1], shape[2]), np.float32)

    def read(self, frame: np.ndarray, k: int, into: np.ndarray) -> None:
        """Tile ``k`` of ``frame`` into ``into`` (the same values as :func:`read_tile`)."""
        index = self.indices[k]
        np.take(frame, index[0], axis=0, out=self._rows, mode="clip")
        if len(index) == 2:
            np.take(self._rows, index[1], axis=1, out=into, mode="clip")
        else:
            np.take(self._rows, index[1], axis=1, out=self._rows2, mode="clip")
            np.take(self._rows2, index[2], axis=2, out=into, mode="clip")
