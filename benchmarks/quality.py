"""Quality on the simulator: raw, Richardson-Lucy (oracle iterations) and ZS-DeconvNet.

For each case a widefield image is simulated (256x256 camera pixels, Poisson-Gaussian noise),
and every method is scored against the same reference (a 2x better microscope on the 2x grid)
with the paper's protocol (percentile normalisation, linear fit, PSNR/SSIM, same 16 px crop);
bead cases also report the bead FWHM (nm). ZS-DeconvNet runs the product path: train (fast
preset) -> export ONNX -> onnxruntime predict.

    python benchmarks/quality.py                      # all cases, RL + ZS-DeconvNet
    python benchmarks/quality.py --no-zs              # raw and RL only (seconds)
    python benchmarks/quality.py --cases mixed:5 --iterations 500
    python benchmarks/quality.py --cases beads:10 --set hessian_weight=0.005 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from zsdeconvnet.cli.physics import sr_to_grid
from zsdeconvnet.export.checkpoint import export_checkpoint
from zsdeconvnet.physics.metrics import bead_fwhm, psnr_ssim
from zsdeconvnet.physics.optics import pupil_psf
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.richardson_lucy import best_richardson_lucy
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.training.config import parse_overrides, preset
from zsdeconvnet.training.trainer import Trainer

CASES = ["filaments:5", "filaments:25", "mixed:5", "mixed:25", "beads:10"]
CROP = 16


def score(image, reference, cfg, beads):
    result = psnr_ssim(image, reference, CROP)
    if beads is not None:
        factor = reference.shape[0] / image.shape[0]
        px = cfg.pixel_nm / 2 * factor
        result.update(bead_fwhm(image, sr_to_grid(beads, factor), px))
    return result


def train_export(trainer: Trainer, workdir: Path, train: bool = True) -> tuple[Model, float]:
    """Train to the end (the training time is returned, in seconds), write the checkpoint,
    export it to ONNX and load that file with the runtime, as a user's run would.
    ``train=False`` exports the starting weights (the prior as shipped) untrained."""
    start = time.perf_counter()
    if train:
        trainer.train(progress=False)
    seconds = time.perf_counter() - start
    trainer.save_checkpoint()
    export_checkpoint(workdir, workdir / "model.onnx")
    return Model(workdir / "model.onnx", provider="cpu"), seconds


def zs_deconvnet(noisy, cfg, args, workdir):
    psf = check_psf(simulate_psf(cfg), (cfg.pixel_nm, cfg.pixel_nm), 2)
    tcfg = preset(
        args.preset,
        seed=args.seed,
        checkpoint_every=10**9,
        device=args.device,
        **{"iterations": args.iterations, **parse_overrides(args.set)},
    )
    trainer = Trainer(tcfg, [noisy.astype(np.float32)], psf, cfg.pixel_nm, workdir)
    model, seconds = train_export(trainer, workdir)
    image = noisy.astype(np.float32)
    _, deconvolved = Predictor(model, PredictOptions(progress=False)).predict_array(image)
    _, ensemble = Predictor(model, PredictOptions(progress=False, ensemble=True)).predict_array(
        image
    )
    return (
        deconvolved,
        ensemble,
        {
            "iterations": tcfg.iterations,
            "train_seconds": round(seconds, 1),
            "step_ms": round(1000 * seconds / tcfg.iterations, 1),
            "device": args.device,
            **({"preset": args.preset} if args.preset != "fast" else {}),
            **({"set": args.set} if args.set else {}),
        },
    )


def baselines(images, cfg, beads) -> list[tuple[str, dict, dict]]:
    """Raw (upsampled) and Richardson-Lucy at its oracle iteration count, scored."""
    noisy, reference = images["noisy"].astype(np.float64), images["reference"]
    background = cfg.offset_adu + cfg.background_photons
    psf_sr = pupil_psf(61, cfg.pixel_nm / 2, cfg.na, cfg.wavelength_nm, cfg.refractive_index)[0]
    start = time.perf_counter()
    k, rl, _ = best_richardson_lucy(noisy, psf_sr, reference, background, crop=CROP, max_iter=200)
    rl_seconds = time.perf_counter() - start
    return [
        ("raw (upsampled)", score(noisy, reference, cfg, beads), {}),
        (
            "RL best",
            score(rl, reference, cfg, beads),
            {"iterations": k, "seconds": round(rl_seconds, 1)},
        ),
    ]


def simulate_psf(cfg):
    return pupil_psf(cfg.psf_size, cfg.pixel_nm, cfg.na, cfg.wavelength_nm, cfg.refractive_index)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=CASES, help="structure:photons")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=None, help="default: the preset's")
    parser.add_argument("--no-zs", action="store_true", help="raw and RL only")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--device", default="cpu", help="training device (cpu, cuda)")
    parser.add_argument(
        "--set", action="append", default=[], help="training config override FIELD=VALUE"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    rows = []
    print(f"# machine: {platform.processor() or platform.machine()}, seed {args.seed}")
    header = f"{'case':14s} {'method':16s} {'PSNR':>6s} {'SSIM':>6s} {'FWHM nm':>8s}  notes"
    print(header)
    for case in args.cases:
        structure, photons = case.split(":")
        cfg = SimulationConfig(
            structure=structure, photons=float(photons), size=256, seed=args.seed
        )
        images = simulate(cfg)
        beads = np.array(cfg.bead_positions_sr) if structure == "beads" else None
        results = baselines(images, cfg, beads)
        if not args.no_zs:
            with tempfile.TemporaryDirectory() as tmp:
                zs, zs_ens, info = zs_deconvnet(images["noisy"], cfg, args, Path(tmp))
            results.append(("ZS-DeconvNet", score(zs, images["reference"], cfg, beads), info))
            results.append(
                (
                    "ZS + ensemble",
                    score(zs_ens, images["reference"], cfg, beads),
                    {"predict": "--ensemble (8 orientations)"},
                )
            )
        for method, s, info in results:
            fwhm = f"{s['fwhm_nm']:8.1f}" if "fwhm_nm" in s else f"{'':8s}"
            print(
                f"{case:14s} {method:16s} {s['psnr']:6.2f} {s['ssim']:6.3f} {fwhm}  "
                f"{json.dumps(info) if info else ''}",
                flush=True,
            )
            rows.append({"case": case, "method": method, **s, **info})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
