"""Units of prediction work that run wherever a worker is: this process or a Dask worker.

A task is a small picklable value (paths, indices, tiles), never pixels: each worker reads its
own input region and writes its own output chunks, so nothing large crosses the network. Each
worker process opens an ONNX session once per model and reuses it for every task it runs
(:func:`worker_model`), and opens each input once (:func:`worker_image`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import Image, read_input
from .model import Model
from .predict import PredictOptions, Predictor
from .tiling import Tile, TilePlan
from .zarr_io import FrameView, ZarrOutput, downsample_chunk, frame_of

#: per-process caches (a Dask worker keeps them between tasks)
_MODELS: dict[tuple, Model] = {}
_IMAGES: dict[str, Image] = {}
_LOADS = {"models": 0}


@dataclass(frozen=True)
class ModelSpec:
    """How a worker opens the model: path and session settings."""

    path: str
    provider: str = "auto"
    threads: int | None = None
    io_binding: bool = False


def worker_model(spec: ModelSpec) -> Model:
    """The process's ONNX session for ``spec`` (created on first use, then reused)."""
    key = (spec.path, spec.provider, spec.threads, spec.io_binding)
    if key not in _MODELS:
        _MODELS[key] = Model(spec.path, spec.provider, spec.threads, spec.io_binding)
        _LOADS["models"] += 1
    return _MODELS[key]


def worker_image(path: str) -> Image:
    """The process's open handle on an input image (opened once, read lazily)."""
    if path not in _IMAGES:
        _IMAGES[path] = read_input(path)
    return _IMAGES[path]


@dataclass(frozen=True)
class Done:
    """What a task reports back: which process ran it and how many sessions it has opened."""

    pid: int
    sessions: int
    key: str


def _done(key: str) -> Done:
    return Done(os.getpid(), _LOADS["models"], key)


@dataclass(frozen=True)
class BlockTask:
    """Restore a block of tiles of one frame into zarr outputs.

    The tiles come from the whole frame's plan, so every tile is exactly the tile a
    single-process run computes, and each output chunk belongs to exactly one tile.
    """

    model: ModelSpec
    options: PredictOptions
    input: str
    frame: tuple[int, ...]
    tiles: tuple[Tile, ...]
    tile_shape: tuple[int, ...]
    lo: float
    hi: float
    deconvolved: ZarrOutput
    denoised: ZarrOutput | None
    key: str


def run_block(task: BlockTask) -> Done:
    """Run one :class:`BlockTask` (on whichever worker it was sent to)."""
    predictor = Predictor(worker_model(task.model), task.options)
    data, _ = predictor.select(worker_image(task.input))
    frame = frame_of(data, task.frame)
    plan = TilePlan(frame.shape, task.tile_shape, predictor.halo, task.tiles)
    dec = FrameView(task.deconvolved.array(0), task.frame)
    den = None if task.denoised is None else FrameView(task.denoised.array(0), task.frame)
    predictor.run_tiles(plan, frame, task.lo, task.hi, den, dec)
    for out in (task.deconvolved, task.denoised):
        if out is not None:
            out.mark(task.key)
    return _done(task.key)


@dataclass(frozen=True)
class PyramidTask:
    """Compute one chunk of a pyramid level from the level below."""

    output: ZarrOutput
    level: int
    box: tuple[slice, ...]
    key: str


def run_pyramid(task: PyramidTask) -> Done:
    downsample_chunk(task.output, task.level, task.box)
    task.output.mark(task.key)
    return _done(task.key)


@dataclass(frozen=True)
class FileTask:
    """Restore one whole TIFF into TIFF outputs (written atomically by the worker)."""

    model: ModelSpec
    options: PredictOptions
    input: str
    output: str
    denoised: str | None
    overwrite: bool
    key: str = field(default="")


def run_file(task: FileTask) -> Done:
    predictor = Predictor(worker_model(task.model), task.options)
    predictor.predict_file(task.input, task.output, task.denoised, overwrite=task.overwrite)
    return _done(task.key or Path(task.input).name)


def frame_ranges(predictor: Predictor, image: Image) -> list[tuple[tuple[int, ...], float, float]]:
    """Normalisation range of every frame (whole-frame statistics, as a single process)."""
    from .errors import describe
    from .normalize import frame_range

    data, _ = predictor.select(image)
    frames = data.shape[: data.ndim - predictor.ndim]
    out = []
    for index in np.ndindex(frames):
        view = frame_of(data, index)
        name = describe(image.path) + (f" frame {index}" if index else "")
        out.append((index, *frame_range(view, predictor.model.metadata.normalization, name)))
    return out
