"""Test-time adaptation on a simulated time series whose structure changes.

A model is trained (fast preset) on frame 0 only (filaments); later frames show other
structures (puncta and rings, then mixed). Each later frame is restored without and with
per-frame fine-tuning, and scored against its reference (paper protocol). ``--mode 3d`` does
the same with a time series of stacks (sheets, then filaments, then sheets of another seed;
the simulator's 3D widefield microscope of ``quality3d.py``).

    python benchmarks/adaptation.py [--mode 3d] [--base-iterations 600] [--adapt 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from zsdeconvnet.physics.metrics import psnr_ssim
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.simulate import WIDEFIELD_3D, SimulationConfig, simulate
from zsdeconvnet.runtime.predict import PredictOptions
from zsdeconvnet.training.adapt import adapt_and_restore
from zsdeconvnet.training.config import preset
from zsdeconvnet.training.trainer import Trainer

SERIES = {
    "2d": [("filaments", 11), ("puncta", 12), ("mixed", 13), ("puncta", 14)],
    "3d": [("filaments", 11), ("sheets", 12), ("filaments", 13), ("sheets", 14)],
}


def score(output: np.ndarray, reference: np.ndarray, border: int = 16) -> dict[str, float]:
    """The paper's PSNR and SSIM, ``border`` reference pixels excluded in y and x only."""
    lateral = (..., slice(border, -border), slice(border, -border))
    return psnr_ssim(output[lateral], reference[lateral])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["2d", "3d"], default="2d")
    parser.add_argument("--base-iterations", type=int, default=600)
    parser.add_argument("--adapt", type=int, default=50)
    parser.add_argument("--photons", type=float, default=10)
    parser.add_argument(
        "--lr-fraction",
        type=float,
        default=0.1,
        help="fine-tuning lr as a fraction of the preset's",
    )
    args = parser.parse_args()
    series = SERIES[args.mode]
    optics = dict(size=64, z_size=24, **WIDEFIELD_3D) if args.mode == "3d" else dict(size=256)
    sims = [
        SimulationConfig(structure=s, photons=args.photons, seed=seed, **optics)
        for s, seed in series
    ]
    frames = [simulate(cfg) for cfg in sims]
    cfg0 = sims[0]
    sizes = (cfg0.z_step_nm,) * (args.mode == "3d") + (cfg0.pixel_nm, cfg0.pixel_nm)
    psf = check_psf(frames[0]["psf"], sizes, len(sizes))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            preset("fast", args.mode, iterations=args.base_iterations, checkpoint_every=10**9),
            [frames[0]["noisy"].astype(np.float32)],
            psf,
            cfg0.pixel_nm,
            Path(tmp),
            z_step_nm=cfg0.z_step_nm if args.mode == "3d" else None,
        )
        start = time.perf_counter()
        trainer.train(progress=False)
        trainer.save_checkpoint()
        print(
            f"base model: {args.base_iterations} iterations on frame 0 ({series[0][0]}), "
            f"{time.perf_counter() - start:.0f} s"
        )
        later = [f["noisy"].astype(np.float32) for f in frames[1:]]
        options = PredictOptions(tile=None, progress=False)  # small frames: one tile each
        plain = adapt_and_restore(tmp, later, iterations=0, options=options)
        start = time.perf_counter()
        tuned = adapt_and_restore(
            tmp, later, iterations=args.adapt, lr_fraction=args.lr_fraction, options=options
        )
        per_frame = (time.perf_counter() - start) / len(later)
    print(f"{'frame':>5s} {'structure':10s} {'unadapted':>10s} {'adapted':>8s}  (PSNR dB, SSIM)")
    for k, (f, a, b) in enumerate(zip(frames[1:], plain, tuned), start=1):
        s0, s1 = score(a[1], f["reference"]), score(b[1], f["reference"])
        print(
            f"{k:5d} {series[k][0]:10s} {s0['psnr']:6.2f}/{s0['ssim']:.3f} "
            f"{s1['psnr']:6.2f}/{s1['ssim']:.3f}"
        )
    print(
        f"adaptation: {args.adapt} iterations per frame at {args.lr_fraction} x lr, "
        f"{per_frame:.1f} s per frame"
    )


if __name__ == "__main__":
    main()
