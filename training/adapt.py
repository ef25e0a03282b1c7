"""Test-time adaptation (METHOD.md section 4): fine-tune a trained model on each frame.

For long time series whose structures change (mitosis), the paper trains one model on all
frames, then fine-tunes a copy for ~50 iterations on each frame before predicting it. Here the
copy starts from a training checkpoint, trains on the frame alone (same recorruption, patches
and loss, a constant learning rate of ``lr_fraction`` x the preset's), and the frame is
restored with the runtime's tiling through a torch adapter, so the result is stitched exactly
as ``predict`` would.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..physics.psf import PSF
from ..runtime.metadata import ModelMetadata
from ..runtime.predict import PredictOptions, Predictor
from .config import TrainConfig
from .networks import metadata_from_state
from .trainer import Trainer, load_checkpoint

log = logging.getLogger(__name__)


class TorchModel:
    """A trained torch network with the runtime's model interface (``metadata``, ``run``)."""

    def __init__(self, module: torch.nn.Module, metadata: ModelMetadata):
        self.module = module
        self.metadata = metadata
        self.active_provider = "torch"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.module.eval()
        device = next(self.module.parameters()).device
        with torch.no_grad():
            den, dec = self.module(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
        return den.float().cpu().numpy(), dec.float().cpu().numpy()


def adapt_and_restore(
    checkpoint: str,
    frames: list[np.ndarray],
    iterations: int = 50,
    lr_fraction: float = 0.1,
    options: PredictOptions | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fine-tune a copy of the checkpoint's model on each frame, then restore that frame.

    Parameters
    ----------
    checkpoint : str
        Training checkpoint file or run folder.
    frames : list of numpy.ndarray
        ``YX`` frames (2D models) or ``ZYX`` stacks (3D models), in ADU.
    iterations : int
        Fine-tuning iterations per frame (0: no adaptation, the trained model as is).
    lr_fraction : float
        Fine-tuning learning rate as a fraction of the config's.

    Returns
    -------
    list of (denoised, deconvolved)
    """
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_json(state["config"])
    noise = state.get("noise", [])
    if cfg.gain is None and noise and len(noise[0]) >= 3:  # the camera the training measured
        cfg = cfg.replace(gain=float(noise[0][2]))
    psf = PSF(state["psf"].numpy(), tuple(state["psf_pixel_size_nm"]), state.get("psf_source", ""))
    metadata = metadata_from_state(state, cfg)
    options = options or PredictOptions(progress=False)
    results = []
    for k, frame in enumerate(frames):
        tuned = cfg.replace(
            iterations=max(iterations, 1),
            lr=cfg.lr * lr_fraction,
            schedule="step",
            lr_step=10**9,
            seed=cfg.seed + k,
            init="scratch",  # the trained model's weights are loaded below
        )
        trainer = Trainer(
            tuned,
            [frame],
            psf,
            float(state["pixel_size_nm"]),
            None,
            z_step_nm=state.get("z_step_nm"),
        )
        trainer.model.load_state_dict(state["model"])
        if iterations > 0:
            trainer.train(progress=False)
        predictor = Predictor(TorchModel(trainer.model, metadata), options)
        results.append(predictor.predict_array(frame))
        log.info("frame %d adapted for %d iterations", k, iterations)
    return results
