"""What the 3D data term alone can do for beads: optimise the deconvolved volume itself.

No network: the odd-plane half of the bead case of ``quality3d.py`` (64x64x24 voxels, 10
photons, seed 1) is deconvolved by Adam on the voxels of the output grid, with the loss of 3D
training (L1 of the re-blurred, 2x2-pooled volume against the even planes, plus the 3D Hessian
penalty), with or without positivity (output >= 0 above the background level that training
estimates, ``data3d.background_level``). Prints the bead FWHM as the optimisation goes.

    python benchmarks/beads3d_direct.py [--weights 0 0.001 0.01 0.1] [--steps 1500]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from beads3d_loss import bead_case  # benchmarks/ is on sys.path when run as a script
from torch.nn import functional as F
from zsdeconvnet.physics.metrics import bead_fwhm_3d
from zsdeconvnet.training.config import preset
from zsdeconvnet.training.data3d import background_level
from zsdeconvnet.training.losses import hessian_penalty_3d


def deconvolve(data, blur, weight, background, steps, lr, report):
    """Adam on the output voxels; ``background`` None = no positivity (and no background)."""
    x, target = data[0::2], torch.from_numpy(data[1::2].copy())
    start = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    level = background or 0.0
    if background is not None:
        start = np.clip(start - level, 0, None)
    volume = torch.tensor(start, requires_grad=True)
    optimizer = torch.optim.Adam([volume], lr=lr)
    for step in range(steps + 1):
        reblurred = F.avg_pool3d(blur(volume[None, None]), (1, 2, 2))[0, 0] + level
        loss = (reblurred - target).abs().mean() + weight * hessian_penalty_3d(volume[None, None])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if background is not None:
            with torch.no_grad():
                volume.clamp_(min=0)
        if step % (steps // 3) == 0:
            report(step, volume.detach().numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.001, 0.01, 0.1])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    sim, images, blur, data = bead_case(preset("fast", "3d"))
    background = background_level(data)  # the level is linear in the normalisation
    positions = np.array(sim.bead_positions_sr)
    positions[:, 0] /= 2  # the odd planes: every other plane of the full grid
    print(f"{'positivity':>10s} {'Hessian':>8s} {'step':>5s} {'FWHM xy':>8s} {'FWHM z':>7s}")
    for positive in (False, True):
        for weight in args.weights:

            def report(step, volume, positive=positive, weight=weight):
                fwhm = bead_fwhm_3d(volume, positions, sim.pixel_nm / 2, 2 * sim.z_step_nm, 6, 3)
                print(
                    f"{str(positive):>10s} {weight:8.4f} {step:5d} "
                    f"{fwhm['fwhm_lateral_nm']:8.1f} {fwhm['fwhm_axial_nm']:7.1f}",
                    flush=True,
                )

            level = background if positive else None
            deconvolve(data, blur, weight, level, args.steps, args.lr, report)


if __name__ == "__main__":
    main()
