"""The in-process API: load a model once, restore numpy frames as they come (API version 1).

For programs that produce frames (acquisition software, a live viewer, a pipeline)::

    from zsdeconvnet.runtime.restorer import Restorer

    restorer = Restorer("cell.onnx")                 # loads and checks the model once
    result = restorer.restore(frame)                  # YX (2D model) or ZYX (3D model)
    result.denoised, result.deconvolved               # float32, the input's intensity units
    result.output_pixel_size_nm                       # half the input's in y and x

What it does is what ``zsdeconvnet predict`` does to one frame: whole-frame normalisation
(the model's percentiles), tiles of the model's size multiple with the effective halo (exact
for older models), stitched by centre crop; the outputs equal ``predict``'s for the same frame
and options (``tests/test_restorer.py``). Models whose export measured each stage's reach
(``stage_halo``) are restored stage by stage (``runtime.staged``: stage 1 over the frame, then
stage 2 over its output, each tile with its own stage's context) where that computes fewer
pixels than one pass, unless an overlap other than the effective one is asked for. Frames of
one shape reuse every buffer: after the first, a frame allocates no new frame-sized array
(outputs included, when ``out=`` is given), so a stream does not churn memory. ``restore``
may be called from any thread: one call runs at a time per :class:`Restorer` (a lock), so a
worker thread can restore while the caller keeps acquiring. Numpy and onnxruntime only.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .metadata import ModelMetadata
from .model import Model
from .normalize import MAX_PERCENTILE_SAMPLES
from .predict import PredictOptions, Predictor
from .staged import StagedRunner, fewer_pixels, plan_staged
from .tiling import DEFAULT_TILE, TilePlan, TileReader

#: Version of this API (the class names, ``restore``'s signature and ``Restoration``'s fields):
#: raised when any of them changes incompatibly
API_VERSION = 1


@dataclass(frozen=True)
class Restoration:
    """The two outputs of one frame and their pixel sizes.

    Attributes
    ----------
    denoised : numpy.ndarray
        Stage 1's output, the input's shape, float32 in the input's intensity units.
    deconvolved : numpy.ndarray
        Stage 2's output, ``output_scale`` times larger (2x in y and x), float32, same units.
    pixel_size_nm : tuple of float or None
        The input's pixel size per spatial axis (nm): as given, else the model's training size.
    output_pixel_size_nm : tuple of float or None
        The deconvolved output's pixel size per axis (nm).
    """

    denoised: np.ndarray
    deconvolved: np.ndarray
    pixel_size_nm: tuple[float, ...] | None
    output_pixel_size_nm: tuple[float, ...] | None


class Restorer:
    """A loaded model that restores in-memory frames, reusing its buffers.

    Parameters
    ----------
    model : str, os.PathLike or Model
        The ONNX model file (or an already loaded :class:`Model`).
    provider : str
        ``cpu``, ``cuda``, ``tensorrt`` or ``auto`` (as ``predict --provider``).
    tile : int or None
        Region each tile restores (px, y-x); ``None`` or 0: the whole frame in one tile.
    tile_z : int or None
        Planes per tile for 3D models (``None``: the predictor's automatic choice).
    overlap : int, str or None
        Context per tile: ``None`` / ``"effective"`` (the measured halo), ``"exact"``, or px.
    threads : int or None
        CPU threads for onnxruntime.
    """

    def __init__(
        self,
        model: str | os.PathLike | Model,
        provider: str = "cpu",
        tile: int | None = DEFAULT_TILE,
        tile_z: int | None = None,
        overlap: int | str | None = None,
        threads: int | None = None,
    ):
        self.model = (
            model if isinstance(model, Model) else Model(model, provider=provider, threads=threads)
        )
        options = PredictOptions(tile=tile or None, tile_z=tile_z, overlap=overlap, progress=False)
        self.predictor = Predictor(self.model, options)
        self._lock = threading.Lock()
        self._shape: tuple[int, ...] | None = None

    @classmethod
    def from_predictor(cls, predictor: Predictor) -> Restorer:
        """The API over a :class:`Predictor`'s model and options (how ``predict``, the Fiji
        server and napari restore in-memory frames through this class)."""
        restorer = cls.__new__(cls)
        restorer.model, restorer.predictor = predictor.model, predictor
        restorer._lock, restorer._shape = threading.Lock(), None
        return restorer

    @property
    def metadata(self) -> ModelMetadata:
        """The model's metadata (pixel sizes, scale, halo, PSF, training, quality)."""
        return self.model.metadata

    def restore(
        self,
        frame: np.ndarray,
        pixel_size_nm: tuple[float, ...] | None = None,
        out: Restoration | None = None,
    ) -> Restoration:
        """Restore one frame (spatial axes only: ``YX`` for 2D models, ``ZYX`` for 3D).

        Parameters
        ----------
        frame : numpy.ndarray
            Any real dtype (camera counts as they come); not modified.
        pixel_size_nm : tuple of float, optional
            The frame's pixel size per spatial axis (nm); default: the model's training size.
        out : Restoration, optional
            A previous result to write into (its arrays are overwritten): no output
            allocation. Without it, each call returns new output arrays.

        Raises
        ------
        InputError
            Wrong number of axes, NaN/Inf pixels, a constant frame, or ``out`` of the wrong
            shape.
        """
        frame = np.asarray(frame)
        meta = self.metadata
        if frame.ndim != meta.ndim:
            raise InputError(
                f"the frame has {frame.ndim} axes {frame.shape} but the model is {meta.ndim}D "
                f"({meta.axes}); give one {'plane' if meta.ndim == 2 else 'stack'} at a time"
            )
        shape_out = tuple(s * f for s, f in zip(frame.shape, meta.output_scale))
        if out is not None and (
            out.denoised.shape != frame.shape or out.deconvolved.shape != shape_out
        ):
            raise InputError(
                f"out= holds arrays of shapes {out.denoised.shape} and {out.deconvolved.shape}; "
                f"this frame needs {frame.shape} and {shape_out}"
            )
        with self._lock:
            self._prepare(frame.shape)
            lo, hi = self._normalisation(frame)
            den = np.empty(frame.shape, np.float32) if out is None else out.denoised
            dec = np.empty(shape_out, np.float32) if out is None else out.deconvolved
            self._run(lo, hi, den, dec)
        px = tuple(pixel_size_nm) if pixel_size_nm is not None else meta.input_pixel_size_nm
        px_out = None if px is None else tuple(p / f for p, f in zip(px, meta.output_scale))
        return Restoration(den, dec, px, px_out)

    def restore_range(
        self,
        frame: np.ndarray,
        lo: float,
        hi: float,
        denoised: np.ndarray | None,
        deconvolved: np.ndarray,
    ) -> None:
        """Restore ``frame`` with a given normalisation range into given outputs (what
        :meth:`Predictor.restore_frame` calls; ``denoised`` may be None)."""
        with self._lock:
            self._prepare(np.shape(frame))
            np.copyto(self._frame, frame, casting="unsafe")
            den = self._denoised_scratch() if denoised is None else denoised
            self._run(lo, hi, den, deconvolved)

    def _denoised_scratch(self) -> np.ndarray:
        if getattr(self, "_spare", None) is None or self._spare.shape != self._shape:
            self._spare = np.empty(self._shape, np.float32)
        return self._spare

    # -- the reused buffers ----------------------------------------------------------------

    def _prepare(self, shape: tuple[int, ...]) -> None:
        """Plan tiles and allocate every buffer for frames of ``shape`` (once per shape)."""
        if shape == self._shape:
            return
        batch = self.predictor.options.batch
        mode = self.predictor.options.pad_mode
        self._frame = np.empty(shape, np.float32)  # the frame as float32
        self._scratch = np.empty(int(np.prod(shape)), np.float32)  # percentiles, in place
        plan: TilePlan = self.predictor.plan(shape)
        self._staged = self._stage_by_stage(shape, plan)
        if self._staged is not None:
            self._shape = shape
            return
        self._plan = plan
        self._reader = TileReader(shape, [t.start for t in plan.tiles], plan.tile_shape, mode)
        self._batch = np.empty((batch, 1, *plan.tile_shape), np.float32)
        scaled = tuple(n * f for n, f in zip(plan.tile_shape, self.metadata.output_scale))
        self._outputs = (
            np.empty((batch, 1, *plan.tile_shape), np.float32),
            np.empty((batch, 1, *scaled), np.float32),
        )
        self._shape = shape

    def _stage_by_stage(self, shape: tuple[int, ...], plan: TilePlan) -> StagedRunner | None:
        """The stage-by-stage runner for frames of ``shape``, where the model records each
        stage's reach, the overlap is the effective one, stage by stage computes fewer pixels
        than ``plan`` (one pass) and the graph can be cut; else None."""
        reach = self.predictor.stage_reach
        if reach is None:
            return None
        meta = self.metadata
        tile = self.predictor.tile_for(shape)
        staged = plan_staged(shape, tile, reach, meta.halo, meta.size_multiple)
        if not fewer_pixels(staged, plan):
            return None
        stages = self.model.stages()
        if stages is None:
            return None
        options = self.predictor.options
        return StagedRunner(
            stages, staged, shape, meta.output_scale, options.batch, options.pad_mode
        )

    def _normalisation(self, frame: np.ndarray) -> tuple[float, float]:
        """The frame's percentiles (the model's recipe), on the reused buffers."""
        np.copyto(self._frame, frame, casting="unsafe")
        if not np.isfinite(self._frame.sum(dtype=np.float64)):
            raise InputError(
                "the frame contains NaN or Inf pixels; replace them (e.g. with the background "
                "value) before restoring"
            )
        recipe = self.metadata.normalization
        lo, hi = float(self._frame.min()), float(self._frame.max())  # exact, as predict's
        if recipe.low > 0.0 or recipe.high < 100.0:
            sample = self._frame
            if sample.size > MAX_PERCENTILE_SAMPLES:  # the regular subsample predict takes
                step = int(np.ceil((sample.size / MAX_PERCENTILE_SAMPLES) ** (1 / sample.ndim)))
                sample = sample[(slice(None, None, step),) * sample.ndim]
            scratch = self._scratch[: sample.size]
            np.copyto(scratch.reshape(sample.shape), sample)
            q = np.percentile(scratch, [recipe.low, recipe.high], overwrite_input=True)
            lo, hi = float(q[0]), float(q[1])
        if not hi > lo:
            raise InputError(
                f"the frame is constant (all pixels {lo:g}) after percentile clipping; there is "
                "nothing to restore"
            )
        return lo, hi

    def _run(self, lo: float, hi: float, den: np.ndarray, dec: np.ndarray) -> None:
        if self._staged is not None:
            self._staged.run(self._frame, lo, hi, den, dec)
            return
        plan, batch = self._plan, self._batch
        scale, ones = self.metadata.output_scale, (1,) * len(plan.tile_shape)
        span, low = np.float32(hi - lo), np.float32(lo)
        for first in range(0, len(plan.tiles), batch.shape[0]):
            group = plan.tiles[first : first + batch.shape[0]]
            n = len(group)
            for k in range(n):
                tile = batch[k, 0]
                self._reader.read(self._frame, first + k, tile)
                tile -= lo  # normalise in place, the same float32 operations as normalize()
                tile /= hi - lo
            out_den, out_dec = self.model.run(
                batch[:n], out=(self._outputs[0][:n], self._outputs[1][:n])
            )
            for k, t in enumerate(group):
                for target, result, factors in ((dec, out_dec, scale), (den, out_den, ones)):
                    dest, src = t.scaled(factors)
                    view = target[dest]
                    np.multiply(result[(k, 0, *src)], span, out=view)
                    view += low
