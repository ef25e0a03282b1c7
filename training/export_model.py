"""Checkpoint -> ONNX: rebuild the network from its saved config and export it with metadata."""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..export.onnx import export_model
from ..runtime.metadata import ModelMetadata, Normalization
from .config import TrainConfig
from .trainer import load_checkpoint
from .unet2d import ZSDeconvNet2D, model_halo

log = logging.getLogger(__name__)


def metadata_from_state(state: dict, cfg: TrainConfig) -> ModelMetadata:
    """Fill the metadata contract from a checkpoint and its config (the one source of truth)."""
    px = state.get("pixel_size_nm")
    halo = model_halo(cfg)
    psf = state["psf"]
    noise = state.get("noise", [])
    return ModelMetadata(
        ndim=2,
        axes="YX",
        output_scale=(cfg.upsample, cfg.upsample),
        size_multiple=(cfg.size_multiple, cfg.size_multiple),
        halo=(halo, halo),
        normalization=Normalization("percentile", cfg.norm_low, cfg.norm_high),
        input_pixel_size_nm=(px, px) if px else None,
        output_pixel_size_nm=(px / cfg.upsample,) * 2 if px else None,
        psf={
            "shape": list(psf.shape),
            "pixel_size_nm": [round(float(p), 3) for p in state.get("psf_pixel_size_nm", [])],
            "sha256": state.get("psf_sha256", ""),
            "source": state.get("psf_source", ""),
        },
        training={
            "preset": cfg.preset,
            "iterations": int(state["iteration"]),
            "planned_iterations": cfg.iterations,
            "seed": cfg.seed,
            "images": [Path(p).name for p in cfg.images],
            "network": f"two-stage U-Net base {cfg.base_channels}, {cfg.levels} levels, "
            f"{cfg.convs_per_level} convs/level, SR tail {cfg.sr_channels}",
            "train_seconds": round(float(state.get("elapsed", 0.0)), 1),
            "background_adu": [round(n[0], 3) for n in noise],
            "beta2": [round(n[1], 4) for n in noise],
            "software": f"zsdeconvnet {__version__}",
            "date": datetime.date.today().isoformat(),
        },
        channel=cfg.channel,
    )


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike) -> float:
    """Export a training checkpoint (file or run folder) to ONNX; returns the parity error."""
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig(**json.loads(state["config"]))
    model = ZSDeconvNet2D.from_config(cfg)
    model.load_state_dict(state["model"])
    crop = state["parity_crop"].numpy().astype(np.float32)[None, None]
    return export_model(model, metadata_from_state(state, cfg), output, crop)
