"""SIM on the command line: ``sim-reconstruct``, ``sim-recorrupt`` and ``train --mode sim2d``.

A raw 2D-SIM file is one acquisition: ``angles x phases`` frames, angle-major (``a0p0 a0p1 a0p2
a1p0 ...``), as a plain stack (``TYX`` or ``ZYX``). Reconstructions are on a grid of half the
camera pixel, and their TIFFs say so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np

from ..physics.sim_reconstruct import camera_psf, load_sim_stack
from ..runtime.errors import InputError
from ..runtime.io import check_writable, write_tiff
from .main import friendly_errors

log = logging.getLogger(__name__)


_RAW = click.argument("raw", type=click.Path(dir_okay=False, path_type=Path))
_PHASES = click.option("--phases", type=int, default=3, show_default=True, help="Phases per angle.")
_BACKGROUND = click.option(
    "--background", type=float, default=None, help="Camera offset (ADU); estimated if not given."
)


@click.command("sim-reconstruct")
@_RAW
@click.option(
    "--psf",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Widefield PSF TIFF of the detection path.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reconstruction TIFF to write (half the camera pixel).",
)
@click.option(
    "--wiener", type=float, default=0.05, show_default=True, help="Wiener constant (smoother: up)."
)
@_PHASES
@_BACKGROUND
@click.option("--pixel-size", type=float, default=None, help="Camera pixel (nm).")
@click.option("--psf-pixel-size", type=float, default=None, help="PSF pixel (nm).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@friendly_errors
def sim_reconstruct(
    raw, psf, output, wiener, phases, background, pixel_size, psf_pixel_size, overwrite
):
    """Conventional 2D-SIM reconstruction (Wiener) of a raw stack, parameters estimated.

    \b
    Example:
      zsdeconvnet sim-reconstruct raw.tif --psf psf.tif -o sim.tif
    """
    from ..physics.sim_reconstruct import estimate_parameters, reconstruct
    from ..training.recorrupt import estimate_noise

    check_writable(output, overwrite)
    stack, sizes = load_sim_stack(raw, phases)
    cam = camera_psf(psf, pixel_size or sizes.get("X"), psf_pixel_size)
    offset = estimate_noise(stack[0], background).background
    params = estimate_parameters(stack, cam.data, phases, offset)
    image = reconstruct(stack, cam.data, params, wiener, offset)
    fine = cam.pixel_size_nm[-1] / 2
    write_tiff(output, image, "YX", {"X": fine, "Y": fine})
    click.echo(f"pattern: {json.dumps(params.to_dict())}", err=True)
    click.echo(
        f"wrote {output} ({image.shape[1]}x{image.shape[0]}, {fine:.4g} nm pixels)", err=True
    )


@click.command("sim-recorrupt")
@_RAW
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for pair_NNN_input.tif and pair_NNN_target.tif.",
)
@click.option("--pairs", type=int, default=16, show_default=True, help="Recorrupted pairs.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same pairs)."
)
@_PHASES
@_BACKGROUND
@click.option("--overwrite", is_flag=True, help="Replace existing pair files.")
@friendly_errors
def sim_recorrupt(raw, output, pairs, seed, phases, background, overwrite):
    """Recorrupt raw SIM frames into PAIRS of (input, target) raw sets.

    For reconstructing with your own SIM software (the reference's workflow): reconstruct
    every pair_NNN_input.tif and pair_NNN_target.tif, then train on the reconstructions.
    Uses the sim2d preset's recorruption ranges.

    \b
    Example:
      zsdeconvnet sim-recorrupt raw.tif -o recorrupted/ --pairs 16
    """
    from ..training.config import preset
    from ..training.datasim import recorrupted_sets
    from ..training.recorrupt import noise_models

    if pairs < 1:
        raise InputError(f"--pairs must be positive, got {pairs}")
    stack, sizes = load_sim_stack(raw, phases)
    cfg = preset("paper", mode="sim2d", background=background, seed=seed)
    (noise,) = noise_models([stack[0]], background, cfg.gain)
    output.mkdir(parents=True, exist_ok=True)
    names = [
        output / f"pair_{j:03d}_{kind}.tif" for j in range(pairs) for kind in ("input", "target")
    ]
    for name in names:
        check_writable(name, overwrite)
    for j in range(pairs):
        sets = recorrupted_sets(stack, noise, cfg, np.random.default_rng((seed, 7919, j)))
        for kind, data in zip(("input", "target"), sets):
            write_tiff(output / f"pair_{j:03d}_{kind}.tif", data, "TYX", sizes)
    click.echo(f"wrote {len(names)} raw stacks to {output} ({noise.describe()})", err=True)
