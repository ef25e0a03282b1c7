"""Time to quality: PSNR/SSIM against training wall time for a preset, on the simulator.

Trains on one simulated case and, every ``--every`` iterations, exports the model and scores
the runtime's prediction with the paper's protocol (as ``quality.py`` does). Scoring time is
not counted in the wall time. Prints one row per checkpoint.

    python benchmarks/time_to_quality.py [--case mixed:5] [--preset fast] [--every 250]
        [--stop-after N]

``--stop-after N`` ends the curve at iteration ``N`` without changing the preset's schedule
(the first hours of a long GPU preset on a CPU). ``--set time_budget_s=S --set iterations=20000
--every 1000000`` trains as ``train --time-budget S`` does and scores once at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from quality import CROP, score, simulate_psf  # benchmarks/ is on sys.path when run as a script
from zsdeconvnet.export.checkpoint import export_checkpoint
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.training.config import parse_overrides, preset
from zsdeconvnet.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="mixed:5")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE override")
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    structure, photons = args.case.split(":")
    sim = SimulationConfig(structure=structure, photons=float(photons), size=256, seed=args.seed)
    images = simulate(sim)
    beads = np.array(sim.bead_positions_sr) if structure == "beads" else None
    psf = check_psf(simulate_psf(sim), (sim.pixel_nm, sim.pixel_nm), 2)
    cfg = preset(
        args.preset,
        seed=args.seed,
        device=args.device,
        checkpoint_every=10**9,
        **parse_overrides(args.set),
    )
    rows = []
    end = min(cfg.iterations, args.stop_after or cfg.iterations)
    print(
        f"# {args.case}, {args.preset} preset, {cfg.iterations} iterations"
        + (f" (curve stopped at {end})" if end < cfg.iterations else "")
        + f", crop {CROP}"
    )
    print(f"{'iteration':>9s} {'train s':>8s} {'PSNR':>6s} {'SSIM':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        noisy = images["noisy"].astype(np.float32)
        trainer = Trainer(cfg, [noisy], psf, sim.pixel_nm, workdir)
        seconds = 0.0
        # a time budget (--set time_budget_s=S) fixes trainer.cfg.iterations after a few steps
        while trainer.iteration < min(end, trainer.cfg.iterations):
            end = min(end, trainer.cfg.iterations)
            start = time.perf_counter()
            trainer.train(progress=False, stop_after=min(args.every, end - trainer.iteration))
            seconds += time.perf_counter() - start
            trainer.save_checkpoint()
            export_checkpoint(workdir, workdir / "model.onnx")
            model = Model(workdir / "model.onnx", provider="cpu")
            _, out = Predictor(model, PredictOptions(progress=False)).predict_array(noisy)
            s = score(out, images["reference"], sim, beads)
            rows.append({"iteration": trainer.iteration, "train_seconds": round(seconds, 1), **s})
            print(
                f"{trainer.iteration:9d} {seconds:8.1f} {s['psnr']:6.2f} {s['ssim']:6.3f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
