"""The camera gain: how well one image measures it, and what assuming 1 ADU per electron costs.

Recorruption adds noise of variance ``gain x signal + read variance``; the paper assumes a gain
of about 1 ADU per photo-electron. Cameras at other gains (EMCCDs), rescaled images and images in
photons break that. Two parts, printed as tables (``--jsonl`` keeps the rows):

1. ``physics/noise.py: estimate_gain`` on simulated acquisitions recorded by cameras of known
   gain (the simulator's photo-electrons times the gain, plus an offset, rounded to ADU):
   measured / true, or why it was not measured; then what it reads on the shipped real images.
2. The shipped prior fine-tuned ``--iterations`` on the same cases at camera gains 1 and 150
   (150: what the napari nuclei stack reads), with ``gain`` measured (the default) against
   assumed 1 (the paper's); scored with the paper's protocol against the simulator's ground
   truth (the protocol normalises, so the gain's scale does not enter the score).

    python benchmarks/gain.py --iterations 113 --jsonl results/gain.jsonl
    python benchmarks/gain.py --skip-accuracy --init scratch --iterations 400 --gains 150
    python benchmarks/gain.py --skip-accuracy --skip-effect --png docs/images/gain_real_images.png

``--png`` also draws the two real images (stardist's, a plane of the napari nuclei; the optics
``prior_real_images.py`` assumes) restored by the prior fine-tuned 35 iterations with the gain
assumed 1 and with it measured (central crops, each panel on its own 0.5-99.8 % range).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from prior_vs_scratch import fine_tune, make_case
from quality import score, simulate_psf
from train_prior import machine
from zsdeconvnet.physics.noise import estimate_gain
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.training.sample_data import napari_nuclei_stack, stardist_nuclei

ACCURACY_CASES = [
    "filaments:5",
    "filaments:25",
    "mixed:5",
    "mixed:25",
    "beads:10",
    "nuclei:10",
    "membranes:10",
    "puncta:10",
]
GAINS = [0.1, 1.0, 8.0, 150.0]
EFFECT_CASES = ["mixed:25", "filaments:25", "nuclei:10"]
EFFECT_GAINS = [1.0, 150.0]


def recorded(images: dict, gain: float) -> np.ndarray:
    """The simulated acquisition as a camera of ``gain`` ADU per electron records it."""
    offset = 100.0
    electrons = images["noisy"].astype(np.float64) - offset
    return np.clip(np.round(electrons * gain + offset), 0, None).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=113)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jsonl", type=Path, default=None)
    parser.add_argument("--skip-effect", action="store_true", help="part 1 only")
    parser.add_argument("--skip-accuracy", action="store_true", help="part 2 only")
    parser.add_argument("--init", default="prior", help="part 2: prior or scratch")
    parser.add_argument("--cases", nargs="*", default=EFFECT_CASES, help="part 2's cases")
    parser.add_argument("--gains", nargs="*", type=float, default=EFFECT_GAINS, help="part 2")
    parser.add_argument("--png", type=Path, default=None, help="figure of the real images")
    args = parser.parse_args()
    out = args.jsonl.open("a") if args.jsonl else None

    def keep(row: dict) -> None:
        if out:
            out.write(json.dumps({**row, "machine": machine()}) + "\n")
            out.flush()

    print(f"# {machine()}; seed {args.seed}")
    if not args.skip_accuracy:
        accuracy(args.seed, keep)
    if not args.skip_effect:
        effect(args, keep)
    if args.png:
        picture(args.png)


def picture(png: Path) -> None:
    """The real images restored with the gain assumed 1 and measured (35 iterations each)."""
    from prior_real_images import OPTICS, images, plot
    from zsdeconvnet.physics.optics import make_psf

    px = OPTICS["pixel_nm"]
    data = make_psf(
        "pupil", 9, px, OPTICS["na"], OPTICS["wavelength_nm"], OPTICS["refractive_index"]
    )
    psf = check_psf(data[0], (px, px), 2)
    rows = []
    for name, (raw, pure_noise) in images(1).items():
        if pure_noise:
            continue
        row = [("raw", raw, 1)]
        for label, override in (("gain 1 assumed", {"gain": 1.0}), ("gain measured", {})):
            with tempfile.TemporaryDirectory() as tmp:
                run = fine_tune(raw, psf, px, "prior", 0, override, Path(tmp), iterations=35)
            found = estimate_gain(raw).gain if not override else 1.0
            row.append((f"prior + 35 it., {label} ({found:.3g})", run["output"], 2))
        rows.append((name, row))
    plot(rows, png)
    print(f"wrote {png}")


def accuracy(seed: int, keep) -> None:
    """Part 1: measured / true gain on simulated cameras, then the real images' readings."""
    print("\n## measured / true gain (camera gains " + ", ".join(f"{g:g}" for g in GAINS) + ")")
    for case in ACCURACY_CASES:
        _, images = make_case(case, seed)
        cells = []
        for gain in GAINS:
            found = estimate_gain(recorded(images, gain))
            ratio = found.gain / gain
            cells.append(f"{ratio:.2f}" if found.reliable else f"- ({found.reason})")
            keep({"part": "accuracy", "case": case, "gain": gain, "ratio": ratio,
                  "reliable": found.reliable, "reason": found.reason})  # fmt: skip
        print(f"{case:14s} " + " | ".join(cells), flush=True)
    stack = tifffile.imread(napari_nuclei_stack())
    real = {
        "stardist img2d": tifffile.imread(stardist_nuclei()),
        "napari nuclei, plane 30": stack[stack.shape[0] // 2],
        "napari nuclei, stack": stack,
    }
    print("\n## real images")
    for name, image in real.items():
        found = estimate_gain(image)
        print(f"{name:24s} {found.describe()}", flush=True)
        keep({"part": "real", "image": name, "gain": found.gain, "error": found.error,
              "reliable": found.reliable, "reason": found.reason})  # fmt: skip


def effect(args, keep) -> None:
    """Part 2: fine-tuned with the measured gain against the paper's assumed 1."""
    print(f"\n## {args.init} + {args.iterations} iterations: gain measured against assumed 1")
    print(f"{'case':14s} {'camera gain':>11s} {'measured':>9s} {'PSNR / SSIM, measured':>22s} "
          f"{'PSNR / SSIM, assumed 1':>23s}")  # fmt: skip
    for case in args.cases:
        sim, images = make_case(case, args.seed)
        psf = check_psf(simulate_psf(sim), (sim.pixel_nm, sim.pixel_nm), 2)
        for gain in args.gains:
            noisy = recorded(images, gain)
            found = estimate_gain(noisy)
            scores = {}
            for label, override in (("measured", {}), ("assumed 1", {"gain": 1.0})):
                with tempfile.TemporaryDirectory() as tmp:
                    run = fine_tune(
                        noisy, psf, sim.pixel_nm, args.init, 0, override, Path(tmp),
                        iterations=args.iterations,
                    )  # fmt: skip
                scores[label] = score(run["output"], images["reference"], sim, None)
                keep({"part": "effect", "init": args.init, "case": case, "camera_gain": gain,
                      "gain": label, "iterations": args.iterations,
                      "measured": found.gain, **scores[label]})  # fmt: skip
            a, b = scores["measured"], scores["assumed 1"]
            print(
                f"{case:14s} {gain:11g} {found.gain:9.3g} "
                f"{a['psnr']:12.2f} / {a['ssim']:.3f} {b['psnr']:13.2f} / {b['ssim']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
