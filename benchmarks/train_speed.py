"""Training step time and throughput of the presets, measured on one simulated image.

    python benchmarks/train_speed.py [--steps 10] [--device cpu]

Prints ms per step (median after a warm-up step) and samples (patches) per second, with the
data pipeline (recorruption, rotation) included, exactly as ``train`` runs it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from runtime_speed import cpu_name  # benchmarks/ is on sys.path when run as a script
from zsdeconvnet.runtime.psf import check_psf
from zsdeconvnet.training.config import preset
from zsdeconvnet.training.simulate import SimulationConfig, simulate
from zsdeconvnet.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", nargs="*", default=["fast", "paper"])
    parser.add_argument("--mode", choices=["2d", "3d"], default="2d")
    args = parser.parse_args()
    if args.mode == "2d":
        sim = SimulationConfig(structure="mixed", photons=10, size=256, seed=0)
        images = simulate(sim)
        psf = check_psf(images["psf"], (sim.pixel_nm, sim.pixel_nm), 2)
    else:
        sim = SimulationConfig(
            structure="sheets",
            dims=3,
            size=96,
            z_size=32,
            photons=10,
            pixel_nm=92.6,
            na=1.1,
            refractive_index=1.33,
            oversample=2,
            psf_size=21,
            seed=0,
        )
        images = simulate(sim)
        psf = check_psf(images["psf"], (sim.z_step_nm, sim.pixel_nm, sim.pixel_nm), 3)
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"device {args.device}"
    )
    for name in args.presets:
        cfg = preset(name, args.mode, device=args.device, checkpoint_every=10**9)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(
                cfg,
                [images["noisy"].astype(np.float32)],
                psf,
                sim.pixel_nm,
                tmp,
                z_step_nm=sim.z_step_nm if args.mode == "3d" else None,
            )
            trainer.step()
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                trainer.step()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
        step = statistics.median(times)
        print(
            f"{args.mode} {name:6s} {params:5.2f} M params, "
            f"batch {cfg.batch_size}x{cfg.patch_size}^2: "
            f"{1000 * step:7.1f} ms/step, {cfg.batch_size / step:6.1f} samples/s, "
            f"{cfg.iterations} iterations = {cfg.iterations * step / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
