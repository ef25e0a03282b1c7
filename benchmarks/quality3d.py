"""3D quality on the simulator: raw, Richardson-Lucy 3D (oracle iterations), ZS-DeconvNet 3D.

Stacks are simulated (widefield, NA 1.1 water, 92.6 nm pixels, 160 nm steps, Poisson-Gaussian
noise) and scored against the reference (a 2x better microscope on the 2x lateral grid) with the
paper's protocol on the whole volume (16 px lateral border excluded); bead cases report lateral
and axial FWHM. ZS-DeconvNet runs train (fast 3D preset) -> export -> onnxruntime predict.

    python benchmarks/quality3d.py [--cases sheets:5 filaments:5 beads:10] [--iterations N]
        [--every N] [--set FIELD=VALUE ...]

``--every N`` scores the model every N iterations as well (a time-to-quality curve; scoring
time is not counted in the training time).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from zsdeconvnet.export.checkpoint import export_checkpoint
from zsdeconvnet.physics.metrics import bead_fwhm_3d, psnr_ssim
from zsdeconvnet.physics.optics import pupil_psf, z_positions
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.richardson_lucy import best_richardson_lucy
from zsdeconvnet.physics.simulate import WIDEFIELD_3D, SimulationConfig, simulate
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.training.config import parse_overrides, preset
from zsdeconvnet.training.trainer import Trainer

CASES = ["sheets:5", "filaments:5", "beads:10"]


def scores(volume, cfg, reference, beads):
    crop = 16
    ref = reference[:, crop:-crop, crop:-crop]
    out = volume
    if out.shape != reference.shape:  # raw: nearest 2x lateral upsampling onto the grid
        out = np.repeat(np.repeat(out, 2, axis=1), 2, axis=2)
    result = psnr_ssim(out[:, crop:-crop, crop:-crop], ref)
    if beads is not None:
        factor = reference.shape[1] / volume.shape[1]
        pos = beads.copy()
        pos[:, 1:] = (pos[:, 1:] + 0.5) / factor - 0.5
        result.update(bead_fwhm_3d(volume, pos, cfg.pixel_nm / 2 * factor, cfg.z_step_nm))
    return result


def report(records: list, case: str, method: str, s: dict, info: dict) -> None:
    """Print one result row and keep it for ``--json``."""
    lat = f"{s.get('fwhm_lateral_nm', float('nan')):8.1f}"
    ax = f"{s.get('fwhm_axial_nm', float('nan')):7.1f}"
    print(
        f"{case:12s} {method:14s} {s['psnr']:6.2f} {s['ssim']:6.3f} {lat} {ax}  "
        f"{json.dumps(info) if info else ''}",
        flush=True,
    )
    records.append({"case": case, "method": method, **s, **info})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=CASES)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--z-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-zs", action="store_true")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--device", default="cpu", help="training device (cpu, cuda)")
    parser.add_argument(
        "--set", action="append", default=[], help="training config override FIELD=VALUE"
    )
    parser.add_argument(
        "--every", type=int, default=None, help="also score every N iterations (time to quality)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    records = []
    print(f"{'case':12s} {'method':14s} {'PSNR':>6s} {'SSIM':>6s} {'FWHM xy':>8s} {'FWHM z':>7s}")
    for case in args.cases:
        structure, photons = case.split(":")
        cfg = SimulationConfig(
            structure=structure,
            size=args.size,
            z_size=args.z_size,
            photons=float(photons),
            seed=args.seed,
            **WIDEFIELD_3D,
        )
        images = simulate(cfg)
        beads = np.array(cfg.bead_positions_sr) if structure == "beads" else None
        noisy, reference = images["noisy"].astype(np.float64), images["reference"]
        psf_sr = pupil_psf(
            41,
            cfg.pixel_nm / 2,
            cfg.na,
            cfg.wavelength_nm,
            cfg.refractive_index,
            z_positions(21, cfg.z_step_nm),
        )
        start = time.perf_counter()
        k, rl, _ = best_richardson_lucy(
            noisy,
            psf_sr,
            reference,
            cfg.offset_adu + cfg.background_photons,
            max_iter=100,
            score=lambda x, ref, cfg=cfg: scores(x, cfg, ref, None)["psnr"],
        )
        seconds = round(time.perf_counter() - start, 1)
        report(records, case, "raw", scores(noisy, cfg, reference, beads), {})
        report(
            records,
            case,
            "RL-3D best",
            scores(rl, cfg, reference, beads),
            {"iterations": k, "seconds": seconds},
        )
        if not args.no_zs:
            psf = check_psf(images["psf"], (cfg.z_step_nm, cfg.pixel_nm, cfg.pixel_nm), 3)
            tcfg = preset(
                args.preset,
                "3d",
                seed=args.seed,
                checkpoint_every=10**9,
                device=args.device,
                **{"iterations": args.iterations, **parse_overrides(args.set)},
            )
            with tempfile.TemporaryDirectory() as tmp:
                workdir = Path(tmp)
                trainer = Trainer(
                    tcfg,
                    [images["noisy"].astype(np.float32)],
                    psf,
                    cfg.pixel_nm,
                    workdir,
                    z_step_nm=cfg.z_step_nm,
                )
                seconds = 0.0
                while trainer.iteration < tcfg.iterations:
                    start = time.perf_counter()
                    trainer.train(progress=False, stop_after=args.every or tcfg.iterations)
                    seconds += time.perf_counter() - start
                    trainer.save_checkpoint()
                    export_checkpoint(workdir, workdir / "m.onnx")
                    predictor = Predictor(
                        Model(workdir / "m.onnx", provider="cpu"),
                        PredictOptions(tile=64, tile_z=16, progress=False),
                    )
                    _, zs = predictor.predict_array(images["noisy"].astype(np.float32))
                    info = {
                        "iterations": trainer.iteration,
                        "train_seconds": round(seconds, 1),
                        "preset": args.preset,
                        "device": args.device,
                        **({"set": args.set} if args.set else {}),
                    }
                    report(records, case, "ZS-DeconvNet", scores(zs, cfg, reference, beads), info)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
