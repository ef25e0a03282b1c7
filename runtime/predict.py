"""Prediction: whole-frame normalisation, tiled inference in batches, stitching, file outputs.

Memory is bounded by the tile batch, not by the image: inputs are memory-mapped when the TIFF
allows it and outputs are memory-mapped TIFFs written under a temporary name.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .errors import InputError, describe
from .io import (
    Image,
    check_writable,
    memmap_output,
    plain_stack_as_z,
    read_input,
    release_pages,
)
from .metadata import ModelMetadata
from .model import Model
from .normalize import denormalize, frame_range, normalize
from .postprocess import damp_stripes
from .tiling import DEFAULT_TILE, OVERLAPS, PAD_MODES, TilePlan, plan_tiles, read_tile
from .zarr_io import frame_of

log = logging.getLogger(__name__)

_OOM_MARKERS = (
    "out of memory",
    "failed to allocate",
    "bad_alloc",
    "cudaerrormemoryallocation",
    # cuDNN's tensor descriptors take fewer than 2^31 elements: a tile batch past that (e.g.
    # 4 frames of 1024^2 through a 128-channel layer on the 2x grid) needs smaller tiles too
    "cudnn_status_not_supported",
)
#: Largest 3D tile (voxels, halo included) chosen when no --tile-z is given: about 2 GB for the
#: fast 3D network on the CPU (benchmarks/session_memory.py: 1.59 GB peak for 3.7 M voxels).
MAX_AUTO_TILE_VOXELS = 6_000_000
MIN_AUTO_TILE_Z = 8
MIN_AUTO_TILE_XY = 32
#: Memory-mapped inputs and outputs give back their touched pages after this much output, so
#: resident memory stays near the tiles' own (RESULTS.md: a 1024x1024x200 stack).
RELEASE_BYTES = 256 * 2**20
#: The reference's output: percentile 3-100 rescaled to the full uint16 range.
RESCALE_PERCENTILES = (3.0, 100.0)


@dataclass
class PredictOptions:
    """How to run a model over an image.

    Attributes
    ----------
    tile : int or None
        Largest size (input pixels, y and x) of the region each tile restores: an axis is
        split into as few equal tiles as that allows; the model's halo is added on every side.
        ``None``: one tile per frame.
    tile_z : int or None
        The same in z for 3D models. ``None``: the whole stack depth.
    overlap : int, "exact", "effective" or None
        Context (px) kept on each side of every tile in y and x. ``None`` or ``"effective"``:
        the model's effective halo, measured at export so that every output stays within
        1e-5 of the output range of an untiled pass (``runtime.reach``; models without one use
        the exact halo). ``"exact"``: the receptive-field radius, tiled equals untiled to
        float rounding. A number: that many px (smaller is faster but approximate).
    overlap_z : int, "exact", "effective" or None
        The same in z for 3D models.
    batch : int
        Tiles per onnxruntime call.
    pad_mode : str
        ``reflect`` or ``edge`` padding beyond the image border.
    channel : int or None
        Channel to process in a multi-channel file (default: the model's training channel,
        else all channels).
    rescale : bool
        Write uint16 rescaled to percentiles 3-100 per frame (the reference's output) instead
        of float32 in input units.
    damp_stripes : bool
        Suppress sCMOS fixed-pattern stripes in the outputs (Fourier damping, per plane).
    ensemble : bool
        Average the predictions of the 8 orientations of each frame (8x the time; a
        self-ensemble that lowers the network's variance; whole frames are held in memory).
    progress : bool
        Show a progress bar.
    """

    tile: int | None = DEFAULT_TILE
    tile_z: int | None = None
    overlap: int | str | None = None
    overlap_z: int | str | None = None
    batch: int = 1
    pad_mode: str = "reflect"
    channel: int | None = None
    rescale: bool = False
    damp_stripes: bool = False
    ensemble: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise InputError(f"padding must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.batch < 1:
            raise InputError(f"--batch must be >= 1, got {self.batch}")
        for name in ("overlap", "overlap_z"):
            value = getattr(self, name)
            if isinstance(value, str) and value not in OVERLAPS:
                raise InputError(
                    f"--{name.replace('_', '-')} must be a number of px or one of {OVERLAPS}, "
                    f"got {value!r}"
                )
        for name in ("tile", "tile_z", "overlap", "overlap_z"):
            value = getattr(self, name)
            if isinstance(value, str):
                continue
            if value is not None and value < (0 if name.startswith("overlap") else 1):
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {value}")


def tile_halo(meta: ModelMetadata, overlap, overlap_z) -> tuple[int, ...]:
    """The context per axis that tiles get, from the options and the model's metadata."""
    measured = meta.effective_halo["halo"] if meta.effective_halo else meta.halo
    halo = list(meta.halo)
    for axes, choice in ((slice(-2, None), overlap), (slice(0, 1), overlap_z)):
        if axes.start == 0 and meta.ndim != 3:
            continue
        if choice is None or choice == "effective":
            halo[axes] = measured[axes]
        elif choice != "exact":
            halo[axes] = [int(choice)] * len(halo[axes])
    return tuple(halo)


#: The 8 orientations of a y-x plane: (quarter turns, flip), used by ``ensemble``.
ORIENTATIONS = [(t, f) for f in (False, True) for t in range(4)]


def _orient(a: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, turns, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def _unorient(a: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    a = a[..., ::-1] if flip else a
    return np.rot90(a, -turns, axes=(-2, -1))


def _is_oom(err: Exception) -> bool:
    text = str(err).lower()
    return isinstance(err, MemoryError) or any(m in text for m in _OOM_MARKERS)


#: Frames up to this size as float32 (4096 x 4096) are restored by the in-process API, which
#: keeps two float32 copies of the frame; larger ones (up to images larger than RAM) stream
#: tile by tile, so memory stays bounded by the tiles
RESTORER_MAX_BYTES = 64 << 20


class Predictor:
    """Runs a :class:`Model` over frames and files.

    Parameters
    ----------
    model : Model
        The loaded ONNX model.
    options : PredictOptions, optional
        Tiling and output options.
    """

    def __init__(self, model: Model, options: PredictOptions | None = None):
        self.model = model
        self.options = options or PredictOptions()
        self._noticed: set = set()  # files whose axes notice was logged (once, not per block)
        meta = model.metadata
        self.ndim = meta.ndim
        self.scale = meta.output_scale
        self.halo = tile_halo(meta, self.options.overlap, self.options.overlap_z)
        tile = [self.options.tile, self.options.tile]
        self.tile = tuple([self.options.tile_z] + tile if self.ndim == 3 else tile)

    # -- one frame ---------------------------------------------------------------------------

    def plan(self, shape: Sequence[int], tile: Sequence[int | None] | None = None) -> TilePlan:
        """The tile plan for a frame of spatial ``shape``.

        3D models without a ``tile_z`` get tiles of at most ``MAX_AUTO_TILE_VOXELS`` (halo
        included): fewer planes first, then smaller y-x tiles, so a deep stack does not ask for
        a whole-depth tile that no memory holds.
        """
        multiple = self.model.metadata.size_multiple
        return plan_tiles(shape, self.tile_for(shape, tile), self.halo, multiple)

    def tile_for(
        self, shape: Sequence[int], tile: Sequence[int | None] | None = None
    ) -> list[int | None]:
        """The tile size per axis that :meth:`plan` uses for a frame of spatial ``shape``."""
        tile = list(tile or self.tile)
        if self.ndim != 3 or self.options.tile_z is not None:
            return tile
        multiple = self.model.metadata.size_multiple
        plan = plan_tiles(shape, tile, self.halo, multiple)
        while math.prod(plan.tile_shape) > MAX_AUTO_TILE_VOXELS:
            depth = tile[0] or shape[0]
            if depth > MIN_AUTO_TILE_Z:
                tile[0] = max(MIN_AUTO_TILE_Z, depth // 2)
            elif (tile[1] or max(shape[1:])) > 2 * MIN_AUTO_TILE_XY:
                tile[1:] = [(tile[1] or max(shape[1:])) // 2] * 2
            else:
                break
            plan = plan_tiles(shape, tile, self.halo, multiple)
        return tile

    @property
    def stage_reach(self) -> tuple[int, ...] | None:
        """The context per stage when in-memory frames are restored stage by stage
        (``runtime.staged``): the model's measured ``stage_halo`` where the overlap is the
        effective one (the default) on every axis; ``None`` otherwise (one pass)."""
        meta = self.model.metadata
        reach = (meta.effective_halo or {}).get("stage_halo")
        options = self.options
        if reach is None or options.overlap not in (None, "effective"):
            return None
        if meta.ndim == 3 and options.overlap_z not in (None, "effective"):
            return None
        return tuple(reach)

    def restore_frame(
        self,
        frame: np.ndarray,
        lo: float,
        hi: float,
        denoised: np.ndarray | None,
        deconvolved: np.ndarray,
        bar: tqdm | None = None,
    ) -> None:
        """Restore one frame into preallocated outputs (arrays or memory maps).

        Retries with smaller tiles when the execution provider runs out of memory. With
        ``options.ensemble`` the frame is restored in its 8 orientations (4 rotations x flip
        in y-x) and the results, turned back, are averaged.
        """
        if self._in_memory(frame, denoised, deconvolved):
            try:
                self._restorer().restore_range(frame, lo, hi, denoised, deconvolved)
                if bar is not None:
                    bar.update(len(self.plan(np.shape(frame)).tiles))
                return
            except Exception as err:  # out of memory: the tiled path retries smaller tiles
                if not _is_oom(err):
                    raise
        if not self.options.ensemble:
            self._restore_tiled(frame, lo, hi, denoised, deconvolved, bar)
            return
        frame = np.asarray(frame, np.float32)
        acc_dec = np.zeros(deconvolved.shape, np.float64)
        acc_den = None if denoised is None else np.zeros(denoised.shape, np.float64)
        for turns, flip in ORIENTATIONS:
            view = _orient(frame, turns, flip)
            dec = np.empty(_orient(acc_dec, turns, flip).shape, np.float32)
            den = None if acc_den is None else np.empty(view.shape, np.float32)
            self._restore_tiled(np.ascontiguousarray(view), lo, hi, den, dec, bar)
            acc_dec += _unorient(dec, turns, flip)
            if acc_den is not None:
                acc_den += _unorient(den, turns, flip)
        deconvolved[...] = acc_dec / len(ORIENTATIONS)
        if denoised is not None:
            denoised[...] = acc_den / len(ORIENTATIONS)

    def _in_memory(self, frame, denoised, deconvolved) -> bool:
        """Whether this frame goes through the in-process API (``runtime/restorer.py``): numpy
        arrays (memory maps included) of a frame that fits :data:`RESTORER_MAX_BYTES` as
        float32, on the CPU (GPUs keep the out-of-memory retry below), without the ensemble."""
        arrays = [a for a in (frame, denoised, deconvolved) if a is not None]
        return (
            not self.options.ensemble
            and self.model.active_provider == "CPUExecutionProvider"
            and all(isinstance(a, np.ndarray) for a in arrays)
            and 4 * int(np.prod(np.shape(frame))) <= RESTORER_MAX_BYTES
        )

    def _restorer(self):
        """The in-process API over this predictor's model and options (made once)."""
        if getattr(self, "_array_restorer", None) is None:
            from .restorer import Restorer  # restorer imports this module

            self._array_restorer = Restorer.from_predictor(self)
        return self._array_restorer

    def _restore_tiled(self, frame, lo, hi, denoised, deconvolved, bar) -> None:
        tile = list(self.tile)
        while True:
            try:
                self.run_tiles(
                    self.plan(frame.shape, tile), frame, lo, hi, denoised, deconvolved, bar
                )
                return
            except Exception as err:
                if not _is_oom(err):
                    raise
                current = tile[-1] or max(frame.shape[-2:])
                smaller = current // 2
                if smaller < self.model.metadata.size_multiple[-1]:
                    raise InputError(
                        f"out of memory even with {current}-px tiles; use --provider cpu or a "
                        "machine with more memory"
                    ) from None
                log.warning(
                    "out of memory (or over the GPU library's tensor size) with %s-px tiles; "
                    "retrying with %s",
                    current,
                    smaller,
                )
                tile[-2:] = [smaller, smaller]

    def run_tiles(self, plan, frame, lo, hi, denoised, deconvolved, bar=None) -> None:
        """Restore the tiles of ``plan`` (all of a frame's, or a block of them) into outputs.

        ``frame`` and the outputs are indexed in image coordinates (arrays, memory maps or
        zarr frame views); ``lo``/``hi`` are the whole frame's normalisation range.
        """
        batch = self.options.batch
        ones = (1,) * self.ndim
        written = 0
        for first in range(0, len(plan.tiles), batch):
            group = plan.tiles[first : first + batch]
            x = np.stack(
                [
                    normalize(
                        read_tile(frame, t.start, plan.tile_shape, self.options.pad_mode), lo, hi
                    )
                    for t in group
                ]
            )[:, None]
            den, dec = self.model.run(x)
            for k, t in enumerate(group):
                dest, src = t.scaled(self.scale)
                deconvolved[dest] = denormalize(dec[(k, 0, *src)], lo, hi)
                if denoised is not None:
                    dest, src = t.scaled(ones)
                    denoised[dest] = denormalize(den[(k, 0, *src)], lo, hi)
            written += dec.nbytes
            if written > RELEASE_BYTES:  # memory-mapped input and outputs: unmap touched pages
                for array in (frame, deconvolved, denoised):
                    if array is not None:
                        release_pages(array)
                written = 0
            if bar is not None:
                bar.update(len(group))

    def predict_array(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Restore one in-memory frame (spatial axes only).

        Returns
        -------
        denoised, deconvolved : numpy.ndarray
            float32 in input intensity units; ``deconvolved`` is ``output_scale`` times larger.
        """
        frame = np.asarray(frame)
        self._check_spatial(frame.shape, "array")
        lo, hi = frame_range(frame, self.model.metadata.normalization, "the input array")
        den = np.empty(frame.shape, np.float32)
        dec = np.empty(tuple(s * f for s, f in zip(frame.shape, self.scale)), np.float32)
        self.restore_frame(frame, lo, hi, den, dec)
        return den, dec

    def _check_spatial(self, shape: Sequence[int], source: str) -> None:
        if len(shape) != self.ndim:
            raise InputError(
                f"{source} has {len(shape)} spatial dimensions but the model is {self.ndim}D"
            )

    # -- files -------------------------------------------------------------------------------

    def select(self, image: Image) -> tuple[np.ndarray, str]:
        """Apply the channel choice and check the axes against the model."""
        data, axes = image.data, image.axes
        channel = self.options.channel
        if channel is None and "C" in axes:
            channel = self.model.metadata.channel
        if channel is not None and "C" in axes:
            n = data.shape[axes.index("C")]
            if not 0 <= channel < n:
                raise InputError(
                    f"{describe(image.path)} has {n} channels; channel {channel} does not exist "
                    f"(use --channel 0..{n - 1})"
                )
            data = np.take(data, channel, axis=axes.index("C"))
            axes = axes.replace("C", "")
        spatial = "YX" if self.ndim == 2 else "ZYX"
        notice = image.path not in self._noticed
        self._noticed.add(image.path)
        if self.ndim == 3:
            axes = plain_stack_as_z(image, axes, notice)
        elif notice and "Z" in axes and data.shape[axes.index("Z")] > 1:
            log.warning(
                "%s is a Z stack and the model is 2D: it is restored plane by plane (for a "
                "volume, train a 3D model with --mode 3d)",
                describe(image.path),
            )
        if not axes.endswith(spatial):
            raise InputError(
                f"{describe(image.path)} has axes {axes!r} but the model is {self.ndim}D and needs "
                f"{spatial!r} last (a Z stack for a 3D model); check the file or use a "
                f"{5 - self.ndim}D model"
            )
        return data, axes

    def predict_file(
        self,
        input_path: str | os.PathLike,
        output_path: str | os.PathLike,
        denoised_path: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> None:
        """Restore every frame of a TIFF and write the deconvolved (and denoised) TIFF."""
        self.predict_files([(input_path, output_path, denoised_path)], overwrite)

    def predict_files(
        self,
        jobs: Sequence[tuple[str | os.PathLike, str | os.PathLike, str | os.PathLike | None]],
        overwrite: bool = False,
    ) -> None:
        """Restore several files: every input and output is checked before any is written.

        Parameters
        ----------
        jobs : sequence of (input, output, denoised output or None)
        overwrite : bool
            Replace existing outputs.
        """
        prepared = []
        for input_path, output_path, denoised_path in jobs:
            outputs = [check_writable(output_path, overwrite)]
            if denoised_path is not None:
                outputs.append(check_writable(denoised_path, overwrite))
            image = read_input(input_path)
            data, axes = self.select(image)
            frame_shape = data.shape[: data.ndim - self.ndim]
            ranges = [
                frame_range(
                    frame_of(data, index),
                    self.model.metadata.normalization,
                    f"{describe(input_path)}" + (f" frame {index}" if index else ""),
                )
                for index in np.ndindex(frame_shape)
            ]
            prepared.append((image, data, axes, frame_shape, ranges, outputs))
        total = sum(
            len(self.plan(p[1].shape[len(p[3]) :])) * max(1, int(np.prod(p[3]))) for p in prepared
        ) * (len(ORIENTATIONS) if self.options.ensemble else 1)
        with tqdm(
            total=total, unit="tile", desc="predict", disable=not self.options.progress
        ) as bar:
            for image, data, axes, frame_shape, ranges, outputs in prepared:
                self._write_outputs(image, data, axes, frame_shape, ranges, outputs, bar)

    def _write_outputs(self, image, data, axes, frame_shape, ranges, outputs, bar) -> None:
        spatial = data.shape[len(frame_shape) :]
        sr_shape = frame_shape + tuple(s * f for s, f in zip(spatial, self.scale))
        sr_sizes = dict(image.pixel_size_nm)
        for letter, factor in zip(axes[-self.ndim :], self.scale):
            if letter in sr_sizes:
                sr_sizes[letter] = sr_sizes[letter] / factor
        out_path = outputs[0]
        den_path = outputs[1] if len(outputs) > 1 else None
        with contextlib.ExitStack() as stack:
            dtype = np.float32
            if self.options.rescale:
                scratch = stack.enter_context(
                    tempfile.TemporaryDirectory(dir=Path(out_path).parent, prefix=".zsd-")
                )
                dec = np.lib.format.open_memmap(
                    os.path.join(scratch, "sr.npy"), "w+", dtype, sr_shape
                )
                den = (
                    np.lib.format.open_memmap(
                        os.path.join(scratch, "dn.npy"), "w+", dtype, data.shape
                    )
                    if den_path
                    else None
                )
            else:
                dec = stack.enter_context(memmap_output(out_path, sr_shape, dtype, axes, sr_sizes))
                den = (
                    stack.enter_context(
                        memmap_output(den_path, data.shape, dtype, axes, image.pixel_size_nm)
                    )
                    if den_path
                    else None
                )
            for index, (lo, hi) in zip(np.ndindex(frame_shape), ranges):
                self.restore_frame(
                    frame_of(data, index),
                    lo,
                    hi,
                    None if den is None else den[index],
                    dec[index],
                    bar,
                )
                if self.options.damp_stripes:
                    for out in (dec, den):
                        if out is not None:
                            _damp_planes(out[index])
            if self.options.rescale:
                _write_rescaled(dec, out_path, axes, sr_sizes, frame_shape)
                if den is not None:
                    _write_rescaled(den, den_path, axes, image.pixel_size_nm, frame_shape)


def _damp_planes(frame: np.ndarray) -> None:
    """Fourier stripe damping of every ``YX`` plane of ``frame``, in place."""
    for plane in np.ndindex(frame.shape[:-2]):
        frame[plane] = damp_stripes(frame[plane])


def rescale_frame(frame: np.ndarray) -> np.ndarray:
    """The reference's output: percentiles 3-100 of one frame mapped to 0-65535 (uint16)."""
    lo, hi = np.percentile(frame, RESCALE_PERCENTILES)
    scaled = (np.asarray(frame, np.float32) - lo) / max(hi - lo, 1e-12)
    return np.round(np.clip(scaled, 0, 1) * 65535).astype(np.uint16)


def _write_rescaled(source, path, axes, sizes, frame_shape) -> None:
    with memmap_output(path, source.shape, np.uint16, axes, sizes) as out:
        for index in np.ndindex(frame_shape):
            out[index] = rescale_frame(source[index])
