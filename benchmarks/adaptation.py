"""Test-time adaptation on a simulated time series whose structure changes.

A model is trained (fast preset) on frame 0 only (filaments); later frames show other
structures (puncta and rings, then mixed). Each later frame is restored without and with
per-frame fine-tuning, and scored against its reference (paper protocol).

    python benchmarks/adaptation.py [--base-iterations 600] [--adapt 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from zsdeconvnet.runtime.psf import check_psf
from zsdeconvnet.training.adapt import adapt_and_restore
from zsdeconvnet.training.config import preset
from zsdeconvnet.training.metrics import psnr_ssim
from zsdeconvnet.training.simulate import SimulationConfig, simulate
from zsdeconvnet.training.trainer import Trainer

SERIES = [("filaments", 11), ("puncta", 12), ("mixed", 13), ("puncta", 14)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    sims = [
        (SimulationConfig(structure=s, photons=args.photons, size=256, seed=seed))
        for s, seed in SERIES
    ]
    frames = [simulate(cfg) for cfg in sims]
    cfg0 = sims[0]
    psf = check_psf(frames[0]["psf"], (cfg0.pixel_nm, cfg0.pixel_nm), 2)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            preset("fast", iterations=args.base_iterations, checkpoint_every=10**9),
            [frames[0]["noisy"].astype(np.float32)],
            psf,
            cfg0.pixel_nm,
            Path(tmp),
        )
        start = time.perf_counter()
        trainer.train(progress=False)
        trainer.save_checkpoint()
        print(
            f"base model: {args.base_iterations} iterations on frame 0 (filaments), "
            f"{time.perf_counter() - start:.0f} s"
        )
        later = [f["noisy"].astype(np.float32) for f in frames[1:]]
        plain = adapt_and_restore(tmp, later, iterations=0)
        start = time.perf_counter()
        tuned = adapt_and_restore(tmp, later, iterations=args.adapt, lr_fraction=args.lr_fraction)
        per_frame = (time.perf_counter() - start) / len(later)
    print(f"{'frame':>5s} {'structure':10s} {'unadapted':>10s} {'adapted':>8s}  (PSNR dB, SSIM)")
    for k, (f, a, b) in enumerate(zip(frames[1:], plain, tuned), start=1):
        s0 = psnr_ssim(a[1], f["reference"], 16)
        s1 = psnr_ssim(b[1], f["reference"], 16)
        print(
            f"{k:5d} {SERIES[k][0]:10s} {s0['psnr']:6.2f}/{s0['ssim']:.3f} "
            f"{s1['psnr']:6.2f}/{s1['ssim']:.3f}"
        )
    print(
        f"adaptation: {args.adapt} iterations per frame at {args.lr_fraction} x lr, "
        f"{per_frame:.1f} s per frame"
    )


if __name__ == "__main__":
    main()
