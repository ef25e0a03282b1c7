"""``zsdeconvnet demo``: the main job, end to end, on a real image shipped in a PyPI wheel.

Zero-shot training (fast preset) on stardist's 512x512 widefield nuclei image with a PSF from
``zsdeconvnet psf``, export to ONNX, prediction with the ONNX runtime, and a side-by-side PNG.
The image has no pixel size in its metadata; the optics are assumed (20x/0.75 air objective,
Hoechst emission 460 nm, 325 nm camera pixels) and written into the files the demo makes.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import tifffile

from ..runtime.io import write_tiff
from .main import friendly_errors

OPTICS = {"na": 0.75, "wavelength_nm": 460.0, "pixel_nm": 325.0, "refractive_index": 1.0}


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Folder for everything.",
)
@click.option(
    "--iterations",
    type=int,
    default=400,
    show_default=True,
    help="Training iterations (fast preset; on 2 CPU cores ~0.35 s each with native bf16, "
    "~1.2 s with AVX2 only).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same model)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly_errors
def demo(output, iterations, seed, quiet):
    """Run the whole method on a real shipped image: psf, train, export, predict, PNG.

    \b
    Example:
      zsdeconvnet demo -o demo-output
    """
    from ..export.checkpoint import export_checkpoint
    from ..physics.optics import make_psf
    from ..runtime.model import Model
    from ..runtime.predict import PredictOptions, Predictor
    from ..training.config import preset
    from ..training.plots import side_by_side
    from ..training.run import run_training
    from ..training.sample_data import stardist_nuclei

    start = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    px = OPTICS["pixel_nm"]
    raw = tifffile.imread(stardist_nuclei())
    image_path = output / "nuclei.tif"
    write_tiff(image_path, raw, "YX", {"X": px, "Y": px})
    psf_path = output / "psf.tif"
    psf = make_psf(
        "pupil", 9, px, OPTICS["na"], OPTICS["wavelength_nm"], OPTICS["refractive_index"]
    )[0]
    write_tiff(psf_path, psf, "YX", {"X": px, "Y": px})
    click.echo(
        f"1/3 image {image_path} and PSF {psf_path} (NA {OPTICS['na']}, "
        f"{OPTICS['wavelength_nm']:g} nm, {px:g} nm pixels: assumed optics)",
        err=True,
    )
    model_path = output / "nuclei.onnx"
    cfg = preset(
        "fast",
        images=[str(image_path)],
        psf=str(psf_path),
        iterations=iterations,
        seed=seed,
        checkpoint_every=max(50, iterations // 4),
    )
    model_path.unlink(missing_ok=True)
    run_training(cfg, model_path, progress=not quiet, overwrite=True, export=export_checkpoint)
    click.echo("2/3 trained and exported", err=True)
    sr_path, dn_path = output / "nuclei_deconvolved.tif", output / "nuclei_denoised.tif"
    model = Model(model_path, provider="auto")
    Predictor(model, PredictOptions(progress=not quiet)).predict_file(
        image_path, sr_path, dn_path, overwrite=True
    )
    sr, dn = tifffile.imread(sr_path), tifffile.imread(dn_path)
    crop = (slice(192, 320), slice(192, 320))
    side_by_side(
        [
            ("raw", raw[crop].astype(np.float32)),
            ("denoised (stage 1)", dn[crop]),
            ("deconvolved (stage 2, 2x grid)", sr[192 * 2 : 320 * 2, 192 * 2 : 320 * 2]),
        ],
        output / "demo.png",
    )
    click.echo(
        f"3/3 predicted with onnxruntime on {model.active_provider}: {sr_path}, {dn_path}, "
        f"{output / 'demo.png'}  ({time.perf_counter() - start:.0f} s in all)",
        err=True,
    )
