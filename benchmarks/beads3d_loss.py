"""Why 3D beads stay wide: the 3D training loss of the truth, of blurred truths and of a network.

Simulates the bead case of ``quality3d.py`` (64x64x24 voxels, 10 photons, seed 1), normalises
it as training does, and evaluates the two deconvolution terms of the 3D loss (L1 of the
reblurred, pooled output against the odd planes; the 3D Hessian penalty) for the ground truth
on the half-stack grid (scaled to the data, offset included), for that truth blurred laterally
by Gaussians of growing sigma, and for a trained checkpoint's output on the even planes.

    python benchmarks/beads3d_loss.py RUN_FOLDER [--weights 0.1 0.01 0.001]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch.nn import functional as F
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.simulate import WIDEFIELD_3D, SimulationConfig, simulate
from zsdeconvnet.training.config import TrainConfig
from zsdeconvnet.training.losses import FFTConvolver, hessian_penalty_3d
from zsdeconvnet.training.rcan3d import ZSDeconvNet3D
from zsdeconvnet.training.trainer import load_checkpoint, sr_psf


def bead_case(cfg: TrainConfig):
    """The bead case (``SimulationConfig``, its images), the training blur of ``cfg`` and the
    stack normalised as training normalises it."""
    sim = SimulationConfig(
        structure="beads", size=64, z_size=24, photons=10.0, seed=1, **WIDEFIELD_3D
    )
    images = simulate(sim)
    psf = check_psf(images["psf"], (sim.z_step_nm, sim.pixel_nm, sim.pixel_nm), 3)
    blur = FFTConvolver(torch.from_numpy(sr_psf(psf, sim.pixel_nm, cfg, sim.z_step_nm).data))
    noisy = images["noisy"].astype(np.float32)
    lo, hi = np.percentile(noisy, [cfg.norm_low, cfg.norm_high])
    return sim, images, blur, ((noisy - lo) / (hi - lo)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="training run folder or checkpoint of a 3D model")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.1, 0.01, 0.001])
    parser.add_argument("--scale", type=float, default=0.0709, help="truth -> data scale")
    parser.add_argument("--offset", type=float, default=0.204, help="truth -> data offset")
    args = parser.parse_args()
    state = load_checkpoint(args.run)
    cfg = TrainConfig.from_json(state["config"])
    net = ZSDeconvNet3D.from_config(cfg)
    net.load_state_dict(state["model"])
    net.eval()
    sim, images, blur, data = bead_case(cfg)
    target = data[1::2]
    centre = (slice(2, -2), slice(8, -8), slice(8, -8))
    centre_sr = (slice(2, -2), slice(16, -16), slice(16, -16))

    def terms(volume: np.ndarray) -> tuple[float, float]:
        v = torch.as_tensor(volume).float()[None, None]
        with torch.no_grad():
            reblurred = F.avg_pool3d(blur(v), (1, 2, 2))[0, 0].numpy()
            hessian = float(hessian_penalty_3d(v[(..., *centre_sr)]))
        return float(np.abs(reblurred[centre] - target[centre]).mean()), hessian

    with torch.no_grad():
        _, dec = net(torch.from_numpy(data[0::2].copy())[None, None])
    truth = (images["gt"][0::2] + images["gt"][1::2]).astype(np.float32) / 2
    rows = [("trained network", terms(dec[0, 0].numpy()))]
    for sigma in (0, 1, 2, 3, 4, 6):
        blurred = gaussian_filter(truth, (0, sigma, sigma)) if sigma else truth
        rows.append((f"truth, sigma {sigma} px", terms(args.scale * blurred + args.offset)))
    head = " ".join(f"{'L1+' + str(w) + 'H':>11s}" for w in args.weights)
    print(f"{'output':22s} {'L1':>7s} {'Hessian':>9s} {head}")
    for name, (l1, hessian) in rows:
        totals = " ".join(f"{l1 + w * hessian:11.4f}" for w in args.weights)
        print(f"{name:22s} {l1:7.4f} {hessian:9.4f} {totals}")


if __name__ == "__main__":
    main()
