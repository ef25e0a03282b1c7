"""Training step time and throughput of the presets, measured on one simulated image.

    python benchmarks/train_speed.py [--steps 10] [--device cpu|cuda] [--compile]

Prints ms per step (median after warm-up steps) and samples (patches) per second, with the
data pipeline (recorruption, rotation) included, exactly as ``train`` runs it (on a GPU: bf16
autocast and channels_last for 2D). ``--compile`` also times the 2D network under
``torch.compile`` (compile time excluded from the step time and printed separately).
``--compare-pairs`` times 2D steps with pairs made by numpy on the host and by torch on the
device (``pair_backend``), and the pair making alone (``pairs ms``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from runtime_speed import cpu_name  # benchmarks/ is on sys.path when run as a script
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.training.config import parse_overrides, preset
from zsdeconvnet.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", nargs="*", default=["fast", "paper"])
    parser.add_argument("--mode", choices=["2d", "3d"], default="2d")
    parser.add_argument("--compile", action="store_true", help="2D: also time torch.compile")
    parser.add_argument(
        "--compare-amp", action="store_true", help="2D: time amp=off (fp32) and amp=auto"
    )
    parser.add_argument(
        "--compare-pairs", action="store_true", help="2D: time pair_backend numpy and torch"
    )
    parser.add_argument("--json", default=None, help="also write results to this file")
    parser.add_argument(
        "--set", action="append", default=[], help="training config override FIELD=VALUE"
    )
    args = parser.parse_args()
    records = []
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
        f"device {device_name(args.device)}"
    )
    variants = [(name, False, {}) for name in args.presets]
    if args.compile and args.mode == "2d":
        variants += [(name, True, {}) for name in args.presets]
    if args.compare_amp and args.mode == "2d":
        variants = [(n, False, {"amp": a}) for n in args.presets for a in ("off", "auto")]
    if args.compare_pairs and args.mode == "2d":
        variants = [
            (n, False, {"pair_backend": b}) for n in args.presets for b in ("numpy", "torch")
        ]
    for name, compiled, variant in variants:
        overrides = parse_overrides(args.set) | variant
        cfg = preset(name, args.mode, device=args.device, checkpoint_every=10**9, **overrides)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(
                cfg,
                [images["noisy"].astype(np.float32)],
                psf,
                sim.pixel_nm,
                tmp,
                z_step_nm=sim.z_step_nm if args.mode == "3d" else None,
            )
            start = time.perf_counter()
            try:
                if compiled:
                    trainer.model = torch.compile(trainer.model)
                for _ in range(3 if compiled else 1):  # warm-up (and compilation)
                    trainer.step()
            except Exception as err:  # torch.compile needs a working compiler toolchain
                print(f"{name} compiled: failed ({str(err).strip()[:300]})", flush=True)
                continue
            sync(args.device)
            warmup = time.perf_counter() - start
            times, pair_times = [], []
            for _ in range(args.steps):
                start = time.perf_counter()
                trainer.step()
                sync(args.device)
                times.append(time.perf_counter() - start)
                if args.compare_pairs:
                    start = time.perf_counter()
                    trainer._pairs_2d()
                    sync(args.device)
                    pair_times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
        step = statistics.median(times)
        label = f"{name}{' compiled' if compiled else ''}{' bf16' if trainer.bf16 else ''}"
        pairs_ms = 1000 * statistics.median(pair_times) if pair_times else None
        if pairs_ms is not None:
            label += f" {'torch' if trainer.torch_pairs else 'numpy'} pairs"
        print(
            f"{args.mode} {label:15s} {params:5.2f} M params, "
            f"batch {cfg.batch_size}x{cfg.patch_size}^2: "
            f"{1000 * step:7.1f} ms/step, {cfg.batch_size / step:6.1f} samples/s, "
            f"{1 / step:6.1f} it/s, {cfg.iterations} iterations = "
            f"{cfg.iterations * step / 60:.1f} min (warm-up {warmup:.1f} s)"
            + (f", pairs {pairs_ms:.1f} ms" if pairs_ms is not None else ""),
            flush=True,
        )
        records.append(
            {
                "mode": args.mode,
                "preset": label,
                "device": device_name(args.device),
                "params_m": round(params, 3),
                "ms_per_step": round(1000 * step, 2),
                "samples_per_s": round(cfg.batch_size / step, 2),
                "iterations": cfg.iterations,
                "warmup_s": round(warmup, 1),
                "pairs_ms": pairs_ms,
            }
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
