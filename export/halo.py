"""Measure a model file's effective halo and write it into its metadata (``runtime.reach``).

Runs after every export, on the file as written (fp32 or int8: a quantised model's rounding can
turn a tiny context difference into a whole quantisation step, so it is measured itself), on
the training crop and a noise image. fp16 models are left with the exact halo: their kernels
run on GPUs and this measurement runs on the CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..runtime.errors import InputError
from ..runtime.io import atomic_output
from ..runtime.model import Model, is_fp16
from ..runtime.reach import measure_effective_halo, probe_images
from .onnx import attach_metadata

log = logging.getLogger(__name__)


def add_effective_halo(path: str | os.PathLike, image: np.ndarray) -> dict | None:
    """Measure the model at ``path`` on ``image`` (spatial axes, any intensity units) and a
    noise image, and rewrite the file (atomically) with the record as ``effective_halo``.

    Returns the record, or ``None`` for fp16 models (left unchanged).
    """
    path = Path(path)
    model = Model(path, provider="cpu", self_check=False)
    if is_fp16(model.metadata):
        log.info("fp16 model: prediction uses the exact halo (not measured on the CPU)")
        return None
    record = measure_effective_halo(model, probe_images(image))
    metadata = replace(model.metadata, effective_halo=record)
    data = attach_metadata(path.read_bytes(), metadata)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return record


def upgrade_model(
    source: str | os.PathLike, output: str | os.PathLike, image: np.ndarray
) -> dict | None:
    """Copy an older model file to ``output`` with its effective halo measured on ``image``
    (its training image, spatial axes); ``source`` is only read. Nothing is written on error."""
    central = central_crop(image, Model(source, provider="cpu", self_check=False))
    with atomic_output(Path(output)) as tmp:
        tmp.write_bytes(Path(source).read_bytes())
        return add_effective_halo(tmp, central)


def central_crop(
    image: np.ndarray, model: Model, limits: tuple[int, ...] | None = None
) -> np.ndarray:
    """The centre of ``image`` (its first frame or stack) as export measures it: at most
    ``limits`` (default 256 px in y-x for 2D, 16 x 128 x 128 for 3D), whole size multiples."""
    meta = model.metadata
    image = np.asarray(image, np.float32)
    if image.ndim > meta.ndim:  # a time series or channels: the first frame/stack
        image = image.reshape(-1, *image.shape[-meta.ndim :])[0]
    if image.ndim != meta.ndim:
        raise InputError(
            f"the image has {image.ndim} axes but the model is {meta.ndim}D; give one "
            f"{'frame' if meta.ndim == 2 else 'stack'} of its training data"
        )
    limits = limits or ((256, 256) if meta.ndim == 2 else (16, 128, 128))
    sizes = [min(lim, n) // m * m for lim, n, m in zip(limits, image.shape, meta.size_multiple)]
    if min(sizes) < 1:
        raise InputError(f"the image {image.shape} is smaller than the model's size multiple")
    box = tuple(slice((n - k) // 2, (n - k) // 2 + k) for n, k in zip(image.shape, sizes))
    return image[box]
