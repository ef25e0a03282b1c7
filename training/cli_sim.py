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

from ..runtime.cli import friendly_errors
from ..runtime.errors import InputError, describe
from ..runtime.io import atomic_output, check_writable, read_image, write_tiff
from ..runtime.psf import PSF, read_psf, resample_psf

log = logging.getLogger(__name__)


def load_sim_stack(path: Path, phases: int, channel: int | None = None) -> tuple[np.ndarray, dict]:
    """One raw SIM acquisition ``[angles * phases, Y, X]`` (float32 ADU) and its pixel sizes."""
    image = read_image(path, memmap=False)
    data, axes = np.asarray(image.data, np.float32), image.axes
    if "C" in axes:
        data = np.take(data, channel or 0, axis=axes.index("C"))
        axes = axes.replace("C", "")
    data = data.reshape(-1, *data.shape[-2:])
    if data.shape[0] < phases or data.shape[0] % phases:
        raise InputError(
            f"{describe(path)} has {data.shape[0]} frames; a raw 2D-SIM acquisition has "
            f"angles x phases frames ({phases} phases per angle, angle-major)"
        )
    if not np.isfinite(data).all():
        raise InputError(f"{describe(path)} contains NaN or Inf pixels; clean the data")
    return data, image.pixel_size_nm


def camera_psf(psf_path: Path, pixel_nm: float | None, psf_pixel_nm: float | None) -> PSF:
    """The detection PSF resampled to the camera pixel (what reconstruction needs)."""
    psf = read_psf(psf_path, 2, pixel_size_nm=psf_pixel_nm or None)
    if pixel_nm is None:
        pixel_nm = psf.pixel_size_nm[-1]
        log.warning("no pixel size in the raw file: assuming the PSF's, %.4g nm", pixel_nm)
    return resample_psf(psf, (pixel_nm, pixel_nm))


def prepare_sim_training(cfg, psf_path: Path, run_dir: Path | None):
    """Everything ``train --mode sim2d`` needs: ``(frames, psf, pixel_nm, sampler)``.

    ``frames`` are the conventional reconstructions (what the model is applied to), ``psf`` the
    reconstruction's effective PSF on their grid, ``pixel_nm`` their pixel size.
    """
    from .sim_data import SIMAcquisition, SIMPairSampler
    from .sim_reconstruct import effective_psf

    stacks, sizes = [], {}
    for path in cfg.images:
        stack, found = load_sim_stack(Path(path), cfg.sim_phases, cfg.channel)
        stacks.append(stack)
        sizes = sizes or found
    pixel_nm = cfg.pixel_size_nm or sizes.get("X")
    psf = camera_psf(psf_path, pixel_nm, cfg.psf_pixel_size_nm)
    pixel_nm = psf.pixel_size_nm[-1]
    acquisitions = []
    for path, stack in zip(cfg.images, stacks):
        acquisition = SIMAcquisition.prepare(stack, psf.data, cfg)
        click.echo(f"{Path(path).name}: {acquisition.describe()}", err=True)
        acquisitions.append(acquisition)
    first = acquisitions[0]
    sim_psf = effective_psf(first.params, psf.data, first.raw.shape[-2:], cfg.sim_wiener)
    fine = pixel_nm / 2
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_tiff(
            run_dir / "sim_reconstruction.tif",
            np.stack([a.reconstruction for a in acquisitions]),
            "TYX",
            {"X": fine, "Y": fine},
        )
        write_tiff(run_dir / "sim_psf.tif", sim_psf, "YX", {"X": fine, "Y": fine})
        with atomic_output(run_dir / "sim_parameters.json") as tmp:
            tmp.write_text(json.dumps([a.params.to_dict() for a in acquisitions], indent=1))
    sampler = SIMPairSampler(acquisitions, cfg, np.random.default_rng(cfg.seed))
    frames = [a.reconstruction for a in acquisitions]
    return frames, PSF(sim_psf, (fine, fine), f"SIM effective PSF of {psf.source}"), fine, sampler


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
    from .recorrupt import estimate_noise
    from .sim_reconstruct import estimate_parameters, reconstruct

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
    from .config import preset
    from .recorrupt import estimate_noise
    from .sim_data import recorrupted_sets

    if pairs < 1:
        raise InputError(f"--pairs must be positive, got {pairs}")
    stack, sizes = load_sim_stack(raw, phases)
    cfg = preset("paper", mode="sim2d", background=background, seed=seed)
    noise = estimate_noise(stack[0], background, cfg.gain)
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
