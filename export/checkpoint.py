"""Checkpoint -> ONNX: rebuild the network from its saved config and export it with metadata."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from ..runtime.errors import InputError
from ..training.config import TrainConfig
from ..training.networks import build_network, metadata_from_state
from ..training.trainer import load_checkpoint
from .halo import add_effective_halo
from .onnx import export_model
from .report import add_quality_report

log = logging.getLogger(__name__)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    quantize: str | None = None,
    min_psnr: float = 45.0,
) -> float:
    """Export a training checkpoint (file or run folder) to ONNX; returns the parity error.

    With ``quantize="int8"`` the written model is the static-int8 version (CPU speed),
    calibrated on tiles of the training image(s); with ``quantize="fp16"`` the half-precision
    version (GPU speed). Either is refused below ``min_psnr`` dB against fp32 on those tiles.
    """
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_json(state["config"])
    model = build_network(cfg)
    model.load_state_dict(state["model"])
    crop = state["parity_crop"].numpy().astype(np.float32)[None, None]
    metadata = metadata_from_state(state, cfg)
    run_dir = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    if quantize is None:
        diff = export_model(model, metadata, output, crop)
        add_effective_halo(output, crop[0, 0])
        add_quality_report(output, state, run_dir)
        return diff
    from .quantize import KINDS, quantize_model

    if quantize not in KINDS:
        raise InputError(f"unknown quantisation {quantize!r}; choose one of {list(KINDS)}")
    if quantize == "int8" and cfg.ndim != 2:
        raise InputError("int8 export is available for 2D models only (use fp16 for 3D)")

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        diff = export_model(model, metadata, fp32, crop)
        tiles = calibration_tiles(cfg, crop) if cfg.ndim == 2 else [crop]
        quantize_model(fp32, output, tiles, min_psnr, quantize)
    add_effective_halo(output, crop[0, 0])
    add_quality_report(output, state, None)  # the run folder keeps the fp32 model's report
    return diff


def export_bioimageio(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    model: str | os.PathLike | None = None,
) -> None:
    """Write a bioimage.io package of a 2D checkpoint (fp32 ONNX weights, test tensors).

    ``model`` is the checkpoint's fp32 ONNX export when one was just written (it is packaged
    as it is); otherwise the checkpoint is exported here. The test input is the centre of the
    first training frame (raw intensities); when the training images are no longer readable,
    the checkpoint's stored (normalised) crop.
    """
    from .bioimageio import write_package

    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_json(state["config"])
    if cfg.ndim != 2:
        raise InputError("bioimage.io export is available for 2D models only")
    frames = _training_frames(cfg)
    test_image = frames[0] if frames else state["parity_crop"].numpy().astype(np.float32)
    name = Path(cfg.images[0]).stem if cfg.images else "zsdeconvnet"
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            model = Path(tmp) / f"{name}.onnx"
            export_checkpoint(checkpoint, model)
        write_package(model, output, test_image, name=f"ZS-DeconvNet {name}")


def _training_frames(cfg: TrainConfig) -> list[np.ndarray]:
    """The training images' frames (``YX``), those still readable (none for SIM: its training
    images are raw frames, not what the model sees)."""
    frames = []
    if cfg.mode == "sim2d":
        return frames
    for path in cfg.images:
        try:
            data = np.asarray(tifffile.imread(path), np.float32)
        except (OSError, ValueError):
            continue
        if cfg.channel is not None and data.ndim > 2:  # ImageJ order: ...CYX
            data = np.take(data, cfg.channel, axis=-3)
        frames += list(data.reshape(-1, *data.shape[-2:]))
    return frames


def calibration_tiles(
    cfg: TrainConfig, fallback: np.ndarray, size: int = 256, count: int = 8
) -> list[np.ndarray]:
    """Normalised tiles of the training images (as the runtime normalises them).

    Falls back to the checkpoint's stored crop when the images are no longer readable.
    """
    rng = np.random.default_rng(cfg.seed)
    frames = _training_frames(cfg)
    tiles = []
    for k in range(count if frames else 0):
        frame = frames[k % len(frames)]
        lo, hi = np.percentile(frame, [cfg.norm_low, cfg.norm_high])
        h, w = (min(size, s) // cfg.size_multiple * cfg.size_multiple for s in frame.shape)
        y = int(rng.integers(0, frame.shape[0] - h + 1))
        x = int(rng.integers(0, frame.shape[1] - w + 1))
        tile = (frame[y : y + h, x : x + w] - lo) / max(hi - lo, 1e-12)
        tiles.append(tile.astype(np.float32)[None, None])
    return tiles or [fallback]
