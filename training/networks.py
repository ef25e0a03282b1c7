"""The network a training config describes, and the metadata contract it is exported with."""

from __future__ import annotations

import datetime
from pathlib import Path

from .. import __version__
from ..runtime.metadata import ModelMetadata, Normalization
from .config import TrainConfig
from .rcan3d import ZSDeconvNet3D, rcan_halo
from .unet2d import ZSDeconvNet2D, model_halo


def metadata_from_state(state: dict, cfg: TrainConfig) -> ModelMetadata:
    """Fill the metadata contract from a checkpoint and its config (the one source of truth)."""
    px = state.get("pixel_size_nm")
    psf = state["psf"]
    noise = state.get("noise", [])
    up = cfg.upsample
    if cfg.mode == "3d":
        z = state.get("z_step_nm")
        axes, scale, multiple, halo = "ZYX", (1, up, up), (1, 1, 1), rcan_halo(cfg)
        px_in = (z, px, px) if px and z else None
        px_out = (z, px / up, px / up) if px and z else None
        network = (
            f"two-stage 3D RCAN, {cfg.rcan_channels} channels, {cfg.rcan_groups} groups "
            f"x {cfg.rcab_per_group} RCABs, channel attention window {cfg.ca_window}"
        )
    else:
        m, h = cfg.size_multiple, model_halo(cfg)
        axes, scale, multiple, halo = "YX", (up, up), (m, m), (h, h)
        px_in = (px, px) if px else None
        px_out = (px / up, px / up) if px else None
        network = (
            f"two-stage U-Net base {cfg.base_channels}, {cfg.levels} levels, "
            f"{cfg.convs_per_level} convs/level, SR tail {cfg.sr_channels} ({cfg.sr_tail})"
        )
    return ModelMetadata(
        ndim=cfg.ndim,
        axes=axes,
        output_scale=scale,
        size_multiple=multiple,
        halo=halo,
        normalization=Normalization("percentile", cfg.norm_low, cfg.norm_high),
        input_pixel_size_nm=px_in,
        output_pixel_size_nm=px_out,
        psf={
            "shape": list(psf.shape),
            "pixel_size_nm": [round(float(p), 3) for p in state.get("psf_pixel_size_nm", [])],
            "sha256": state.get("psf_sha256", ""),
            "source": state.get("psf_source", ""),
        },
        training={
            "preset": cfg.preset,
            "mode": cfg.mode,
            "iterations": int(state["iteration"]),
            "planned_iterations": cfg.iterations,
            "seed": cfg.seed,
            "init": _init_summary(cfg),
            "images": [Path(p).name for p in cfg.images],
            "network": network,
            "train_seconds": round(float(state.get("elapsed", 0.0)), 1),
            "background_adu": [round(n[0], 3) for n in noise],
            "beta2": [round(n[1], 4) for n in noise],
            **_gain_summary(state),
            "software": f"zsdeconvnet {__version__}",
            "date": datetime.date.today().isoformat(),
        },
        channel=cfg.channel,
    )


def _gain_summary(state: dict) -> dict:
    """The camera gain recorruption used (ADU per photo-electron) and where it came from;
    nothing for runs without recorruption (3D) or from before it was recorded."""
    noise = state.get("noise", [])
    if not noise or len(noise[0]) < 3:
        return {}
    return {"gain": round(float(noise[0][2]), 4), "gain_source": state.get("gain_source", "")}


def _init_summary(cfg: TrainConfig) -> str:
    """Where training started, as the metadata states it (a prior file other than the shipped
    one is named)."""
    if cfg.init != "prior":
        return "scratch"
    if cfg.prior_file:
        return f"2D prior {Path(cfg.prior_file).name}, fine-tuned"
    return "2D prior, fine-tuned"


def build_network(cfg: TrainConfig):
    """The torch network a config describes (2D U-Net pair or 3D RCAN pair)."""
    return ZSDeconvNet3D.from_config(cfg) if cfg.mode == "3d" else ZSDeconvNet2D.from_config(cfg)
