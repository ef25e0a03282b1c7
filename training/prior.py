"""Training a pretrained prior: the zero-shot loss over many simulated acquisitions.

:class:`PriorTrainer` is the ordinary :class:`~.trainer.Trainer` (checkpoints, resume, loss log,
progress bar) whose batches come from :class:`~.prior_data.PriorSampler`: every sample has its
own image and its own PSF, so the PSF re-blurring runs per sample (:class:`BatchConvolver`).
:func:`write_prior` turns the finished run into the shipped file: weights only (fp16 tensors,
loaded with ``weights_only=True``) and the model card as JSON text inside it.
``benchmarks/train_prior.py`` is the script that makes the shipped prior.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..runtime.io import atomic_output
from .config import TrainConfig
from .losses import zs_loss
from .prior_data import PriorDistribution, PriorSampler, fwhm_range
from .trainer import Trainer

#: The network fields a prior fixes: fine-tuning must build the same network.
ARCHITECTURE_FIELDS = (
    "mode",
    "base_channels",
    "levels",
    "convs_per_level",
    "sr_channels",
    "upsample",
    "sr_tail",
)


class BatchConvolver(torch.nn.Module):
    """Linear ('same') convolution of each sample ``[N, 1, Y, X]`` with its own odd 2D kernel
    (real FFTs on a zero-padded grid, nothing wraps around; kernels zero-padded to one size)."""

    def __init__(self, kernels: list[np.ndarray]):
        super().__init__()
        k = max(max(a.shape) for a in kernels)
        stack = np.zeros((len(kernels), 1, k, k), np.float32)
        for i, a in enumerate(kernels):
            oy, ox = (k - a.shape[0]) // 2, (k - a.shape[1]) // 2
            stack[i, 0, oy : oy + a.shape[0], ox : ox + a.shape[1]] = a
        self.register_buffer("kernels", torch.from_numpy(stack))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernels.shape[-1]
        h, w = x.shape[-2:]
        size = (h + k - 1, w + k - 1)
        spectrum = torch.fft.rfft2(x.float(), s=size) * torch.fft.rfft2(self.kernels, s=size)
        full = torch.fft.irfft2(spectrum, s=size)
        return full[..., k // 2 : k // 2 + h, k // 2 : k // 2 + w]


class PriorTrainer(Trainer):
    """The trainer over simulated acquisitions (2D only)."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, dist: PriorDistribution):
        rng = np.random.default_rng(cfg.seed)
        sampler = PriorSampler(cfg, rng, dist)
        first = sampler.pool[0]
        super().__init__(
            cfg, [first.noisy], first.psf, first.sim.pixel_nm, run_dir, sampler=sampler
        )
        self.rng = rng  # the sampler's generator: checkpointed with the run
        self.dist = dist

    def _loss_2d(self):
        cfg = self.cfg
        x, y, chosen = self.sampler.batch(cfg.batch_size)
        pad = cfg.pad_xy
        xt = torch.nn.functional.pad(torch.from_numpy(x).to(self.device), (pad,) * 4)
        xt = xt.contiguous(memory_format=torch.channels_last)
        blur = BatchConvolver([acq.kernel for acq in chosen]).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            denoised, deconvolved = self.net(xt)
        yt = torch.from_numpy(y).to(self.device)
        return zs_loss(
            denoised.float(),
            deconvolved.float(),
            yt,
            blur,
            cfg.mu,
            cfg.hessian_weight,
            pad,
            cfg.upsample,
        )


def card(trainer: PriorTrainer, seconds: float, machine: str, parent: dict | None = None) -> dict:
    """The model card: recipe, seed, data distribution (as drawn), time and hardware;
    ``parent``: the card of the prior this one continued from (``None``: from scratch)."""
    drawn = trainer.sampler.drawn
    widths = np.array([d["fwhm_sr_px"] for d in drawn])
    structures = sorted({d["structure"] for d in drawn})
    return {
        "name": "zsdeconvnet 2D prior",
        "version": __version__,
        "recipe": "zero-shot ZS-DeconvNet loss (recorrupted pairs, PSF re-blurring, Hessian) "
        "on simulated acquisitions only; no ground truth used",
        "config": json.loads(trainer.cfg.to_json()),
        "architecture": {f: getattr(trainer.cfg, f) for f in ARCHITECTURE_FIELDS},
        "distribution": trainer.dist.to_dict(),
        "acquisitions_seen": len(drawn),
        "structure_counts": {s: sum(d["structure"] == s for d in drawn) for s in structures},
        "fwhm_sr_px_drawn": [round(float(widths.min()), 3), round(float(widths.max()), 3)],
        # the range fine-tuning accepts: the narrowest and widest PSF the distribution draws
        "fwhm_sr_px_range": list(fwhm_range(trainer.dist, trainer.cfg)),
        "iterations": trainer.iteration,
        "training_seconds": round(seconds, 1),
        "hardware": machine,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "started_from": parent,
        "total_iterations": trainer.iteration + _total(parent, "iterations"),
        "total_acquisitions_seen": len(drawn) + _total(parent, "acquisitions_seen"),
        "total_training_seconds": round(seconds + _total(parent, "training_seconds"), 1),
    }


def _total(parent: dict | None, key: str) -> float:
    """``key`` summed over the chain of priors ``parent`` continued from (0 without one)."""
    if parent is None:
        return 0
    return parent.get(f"total_{key}", parent[key])


def write_prior(
    trainer: PriorTrainer,
    path: str | Path,
    seconds: float,
    machine: str,
    parent: dict | None = None,
) -> dict:
    """Write the prior file atomically: ``{"weights": fp16 state dict, "card": JSON text}``."""
    info = card(trainer, seconds, machine, parent)
    weights = {k: v.detach().to(torch.float16) for k, v in trainer.model.state_dict().items()}
    with atomic_output(Path(path)) as tmp:
        torch.save({"weights": weights, "card": json.dumps(info)}, tmp)
    return info
