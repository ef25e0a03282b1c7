"""Where 2D training starts: the shipped prior or random weights (``TrainConfig.init``).

``scratch`` is the paper's method. ``prior`` starts from :data:`priors.PRIOR_2D` (or the file
``TrainConfig.prior_file`` names: a prior made by ``benchmarks/train_prior.py``) and refuses in
one line when the run cannot use it (another network, 3D or SIM, a PSF outside the range the
prior was trained on). ``auto`` (the default) uses the prior where ``prior`` would, and
otherwise trains from scratch, saying why in one log line.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..physics.psf import fwhm_px
from ..runtime.errors import InputError, describe
from .config import TrainConfig
from .priors import PRIOR_2D

log = logging.getLogger(__name__)


def load_prior(path: str | Path = PRIOR_2D) -> tuple[dict[str, torch.Tensor], dict]:
    """The prior's weights (float32) and model card; data only (``weights_only=True``)."""
    path = Path(path)
    fix = "reinstall zsdeconvnet, or train with --init scratch"
    if path != PRIOR_2D:
        fix = "give --prior a file written by benchmarks/train_prior.py, or leave --prior out"
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise InputError(f"prior {describe(path)} is missing or not a weights file; {fix}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        weights = {k: v.float() for k, v in data["weights"].items()}
        card = json.loads(data["card"])
    except Exception:  # pickle with code, truncated archive, wrong layout
        raise InputError(f"prior {describe(path)} is damaged or not a prior; {fix}") from None
    return weights, card


def prior_problem(cfg: TrainConfig, card: dict, psf_sr: np.ndarray) -> str | None:
    """Why the prior cannot start this run (one clause), or ``None`` when it can."""
    if cfg.mode != "2d":
        return f"the prior is for 2D widefield training, not mode {cfg.mode}"
    arch = card["architecture"]
    differ = [f for f, v in arch.items() if getattr(cfg, f) != v]
    if differ:
        shown = ", ".join(f"{f} {getattr(cfg, f)} (prior: {arch[f]})" for f in differ)
        preset = card["config"]["preset"]
        return f"the prior is for the {preset} preset's network; this run has {shown}"
    lo, hi = card["fwhm_sr_px_range"]
    width = fwhm_px(psf_sr)
    if not lo <= width <= hi:
        return (
            f"the PSF's FWHM on the output grid is {width:.2f} px, outside the {lo:.2f}-{hi:.2f} "
            "px the prior was trained on (check --pixel-size and the PSF's pixel size)"
        )
    return None


def initial_weights(
    cfg: TrainConfig, psf_sr: np.ndarray, path: str | Path = PRIOR_2D
) -> dict[str, torch.Tensor] | None:
    """The weights a run starts from (``None``: random, from the seed), per ``cfg.init``."""
    if cfg.init == "scratch" or (cfg.init == "auto" and cfg.mode != "2d"):
        return None
    path = cfg.prior_file or path
    weights, card = load_prior(path)
    problem = prior_problem(cfg, card, psf_sr)
    if problem is None:
        log.info(
            "starting from the 2D prior (%s; %d iterations on %d simulated acquisitions)",
            Path(path).name,
            card.get("total_iterations", card["iterations"]),
            card.get("total_acquisitions_seen", card["acquisitions_seen"]),
        )
        return weights
    if cfg.init == "prior":
        raise InputError(f"--init prior: {problem}; use --init scratch")
    log.warning("training from scratch: %s", problem)
    return None
