"""Where one 2D training step spends its time on this CPU (the `fast` preset by default).

    python benchmarks/step_profile.py [--steps 6] [--set FIELD=VALUE ...]

Builds the trainer exactly as ``train`` does on a simulated 256x256 image, runs warm-up steps,
then profiles ``--steps`` steps with torch.profiler (CPU time of each operator, forward and
backward) and the pair making with a clock. Prints milliseconds per step by part: pairs,
convolutions by the spatial size they run at (the U-Net levels and the 2x tail), FFT PSF
convolution, pooling/upsampling, Hessian and loss arithmetic, optimiser, other; and the CPU's
flags, since bf16 autocast is used only where the CPU has native bf16.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time

import torch
from int8_recipes import cpu_flags  # benchmarks/ is on sys.path when run as a script
from torch.profiler import ProfilerActivity, profile
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.training.config import parse_overrides, preset
from zsdeconvnet.training.trainer import Trainer

PARTS = (
    ("fft", ("fft",)),
    ("pooling / upsampling", ("pool", "upsample", "interpolate")),
    ("optimiser (Adam)", ("adam", "_foreach", "addcdiv", "lerp")),
)


def part_of(name: str, shapes) -> str:
    lowered = name.lower()
    if "conv" in lowered and "backward" not in lowered and shapes and shapes[0]:
        size = shapes[0][-1] if len(shapes[0]) == 4 else "?"
        return f"conv forward @ {size} px"
    if "convolutionbackward" in lowered or "convolution_backward" in lowered:
        size = shapes[0][-1] if shapes and shapes[0] and len(shapes[0]) == 4 else "?"
        return f"conv backward @ {size} px"
    for part, keys in PARTS:
        if any(k in lowered for k in keys):
            return part
    return "other (activations, Hessian, loss, copies)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--set", action="append", default=[], help="config override F=V")
    args = parser.parse_args()
    sim = SimulationConfig(structure="mixed", photons=10, size=256, seed=0)
    images = simulate(sim)
    psf = check_psf(images["psf"], (sim.pixel_nm, sim.pixel_nm), 2)
    cfg = preset(args.preset, **parse_overrides(args.set))
    with tempfile.TemporaryDirectory():
        trainer = Trainer(cfg, [images["noisy"].astype("float32")], psf, sim.pixel_nm, None)
        for _ in range(3):  # warm-up: oneDNN picks its kernels on the first calls
            trainer.step()
        pairs_s = []
        original = trainer._pairs_2d

        def timed_pairs():
            tick = time.perf_counter()
            out = original()
            pairs_s.append(time.perf_counter() - tick)
            return out

        trainer._pairs_2d = timed_pairs
        tick = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.steps):
                trainer.step()
        wall_ms = 1000 * (time.perf_counter() - tick) / args.steps
    # self CPU time of each operator (no double counting of nested calls), by part
    totals: dict[str, float] = collections.defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        totals[part_of(event.key, event.input_shapes)] += event.self_cpu_time_total / 1000
    threads = torch.get_num_threads()
    print(f"machine: {cpu_flags()}; torch {torch.__version__}, {threads} threads")
    print(
        f"preset {args.preset}: batch {cfg.batch_size} x {cfg.patch_size}^2 (+{cfg.pad_xy} pad),"
        f" bf16 autocast {'on' if trainer.bf16 else 'off'}, pairs {cfg.pair_backend}"
    )
    print(f"wall time per step (profiled): {wall_ms:.0f} ms")
    print(f"{'part':<44} {'ms/step':>8} {'share':>6}")
    cpu_total = sum(totals.values())
    pairs_ms = 1000 * sum(pairs_s) / args.steps
    print(f"{'pairs (recorruption, rotation; clock)':<44} {pairs_ms:8.1f} {'':>6}")
    for part, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        per_step = ms / args.steps
        if per_step >= 0.5:
            print(f"{part:<44} {per_step:8.1f} {100 * ms / cpu_total:5.1f}%")
    print(f"{'operators in all (CPU time, all threads)':<44} {cpu_total / args.steps:8.1f}")


if __name__ == "__main__":
    main()
