"""``zsdeconvnet psf``, ``simulate`` and ``evaluate``: the physics toolkit on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import scipy  # noqa: F401  (fail at import: the lazy CLI turns this into an install hint)

from ..physics.simulate import STRUCTURES
from ..runtime.errors import InputError
from ..runtime.io import check_writable, read_image, write_tiff
from .main import friendly_errors


@click.command()
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="PSF TIFF.")
@click.option("--na", type=float, required=True, help="Numerical aperture.")
@click.option("--wavelength", type=float, required=True, help="Emission wavelength (nm).")
@click.option("--pixel-size", type=float, required=True, help="Lateral pixel size (nm).")
@click.option("--size", type=int, default=31, show_default=True, help="Lateral size (odd, px).")
@click.option("--z-step", type=float, default=None, help="Axial step (nm) for a 3D PSF.")
@click.option("--z-size", type=int, default=None, help="Number of planes (odd) for a 3D PSF.")
@click.option(
    "--refractive-index",
    type=float,
    default=1.518,
    show_default=True,
    help="Immersion medium refractive index.",
)
@click.option(
    "--model",
    type=click.Choice(["pupil", "gaussian", "gibson-lanni", "confocal"]),
    default="pupil",
    show_default=True,
    help="PSF model (see docs).",
)
@click.option(
    "--excitation",
    type=float,
    default=None,
    help="Excitation wavelength (nm) for --model confocal (default: the emission).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing PSF file.")
@friendly_errors
def psf(
    output,
    na,
    wavelength,
    pixel_size,
    size,
    z_step,
    z_size,
    refractive_index,
    model,
    excitation,
    overwrite,
):
    """Generate a PSF from the optics (lengths in nm): widefield models or confocal.

    A 2D PSF is the in-focus plane; give --z-step and --z-size for a 3D stack. The TIFF carries
    its pixel size and z step.

    \b
    Examples:
      zsdeconvnet psf -o psf.tif --na 1.49 --wavelength 525 --pixel-size 62.6
      zsdeconvnet psf -o psf3d.tif --na 1.1 --wavelength 525 --pixel-size 92.6 \\
          --z-step 200 --z-size 33 --refractive-index 1.33
    """
    from ..physics.optics import make_psf, z_positions

    check_writable(output, overwrite)
    if (z_step is None) != (z_size is None):
        raise InputError("give both --z-step and --z-size for a 3D PSF, or neither for 2D")
    z = z_positions(z_size, z_step) if z_size else None
    data = make_psf(model, size, pixel_size, na, wavelength, refractive_index, z, excitation)
    axes = "ZYX" if z_size else "YX"
    write_tiff(
        output,
        data if z_size else data[0],
        axes,
        {"X": pixel_size, "Y": pixel_size, **({"Z": z_step} if z_step else {})},
    )
    click.echo(f"wrote {output} ({model}, {'x'.join(map(str, data.shape[-len(axes) :]))})")


@click.command()
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for noisy.tif, psf.tif, gt.tif, reference.tif, params.json.",
)
@click.option(
    "--structure",
    type=click.Choice(list(STRUCTURES)),
    default="mixed",
    show_default=True,
    help="What the ground truth holds (empty: background and camera noise only).",
)
@click.option(
    "--photons",
    type=float,
    default=10,
    show_default=True,
    help="Mean photons per pixel on the structure (the paper uses 5-25).",
)
@click.option("--size", type=int, default=256, show_default=True, help="Camera pixels in y and x.")
@click.option(
    "--dims",
    type=click.Choice(["2", "3"]),
    default="2",
    show_default=True,
    help="2D image or 3D stack.",
)
@click.option("--z-size", type=int, default=32, show_default=True, help="Planes (3D).")
@click.option(
    "--pixel-size",
    type=float,
    default=None,
    help="Camera pixel (nm); default 62.6 (2D) / 92.6 (3D).",
)
@click.option("--z-step", type=float, default=160, show_default=True, help="Plane step (nm, 3D).")
@click.option("--na", type=float, default=None, help="NA; default 1.49 (2D TIRF) / 1.1 (3D).")
@click.option("--wavelength", type=float, default=525, show_default=True, help="Emission (nm).")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same data)."
)
@click.option(
    "--sim",
    is_flag=True,
    help="2D-SIM: 3 angles x 3 phases of stripe illumination (raw.tif; photons per frame).",
)
@friendly_errors
def simulate(
    output, structure, photons, size, dims, z_size, pixel_size, z_step, na, wavelength, seed, sim
):
    """Simulate a noisy widefield acquisition with its PSF and ground truth.

    Writes the noisy camera image (uint16 ADU, offset 100), the PSF sampled on camera pixels,
    the ground truth and the reference (a 2x better microscope) on the 2x grid, and
    params.json. Every TIFF carries its pixel size.

    \b
    Examples:
      zsdeconvnet simulate -o sim/ --structure filaments --photons 5
      zsdeconvnet simulate -o sim3d/ --structure sheets --dims 3 --size 128
      zsdeconvnet simulate -o sim2d/ --sim --structure mixed --photons 5 --size 128
    """
    from ..physics.simulate import SimulationConfig, write_simulation

    if sim:
        from ..physics.sim_simulate import SIMSimulationConfig, write_sim_simulation

        if dims != "2":
            raise InputError("--sim simulates 2D-SIM; drop --dims 3")
        cfg = SIMSimulationConfig(
            structure=structure,
            size=size,
            photons=photons,
            pixel_nm=pixel_size or 62.6,
            na=na or 1.49,
            wavelength_nm=wavelength,
            seed=seed,
        )
        paths = write_sim_simulation(cfg, output)
        click.echo(f"wrote {', '.join(p.name for p in paths.values())} to {output}")
        return

    three = dims == "3"
    cfg = SimulationConfig(
        structure=structure,
        dims=int(dims),
        size=size,
        z_size=z_size,
        photons=photons,
        pixel_nm=pixel_size or (92.6 if three else 62.6),
        z_step_nm=z_step,
        na=na or (1.1 if three else 1.49),
        wavelength_nm=wavelength,
        refractive_index=1.33 if three else 1.518,
        oversample=2 if three else 4,
        seed=seed,
    )
    paths = write_simulation(cfg, output)
    click.echo(f"wrote {', '.join(p.name for p in paths.values())} to {output}")


@click.command()
@click.argument("output_image", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--reference",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ground-truth or reference image (e.g. reference.tif of a simulation).",
)
@click.option("--crop", type=int, default=16, show_default=True, help="Border excluded (px).")
@click.option(
    "--beads",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="params.json of a bead simulation: also report bead FWHM.",
)
@friendly_errors
def evaluate(output_image, reference, crop, beads):
    """PSNR and SSIM of OUTPUT_IMAGE against a reference, by the paper's protocol.

    Percentile normalisation, a least-squares linear map of the output to the reference, then
    PSNR/SSIM on the same crop. Prints JSON.

    \b
    Example:
      zsdeconvnet evaluate restored.tif --reference sim/reference.tif
    """
    from ..physics.metrics import bead_fwhm, psnr_ssim

    out = read_image(output_image, memmap=False)
    ref = read_image(reference, memmap=False)
    if out.data.ndim != 2 or ref.data.ndim != 2:
        raise InputError("evaluate compares single 2D images; give one plane each")
    result = psnr_ssim(np.asarray(out.data, float), np.asarray(ref.data, float), crop)
    if beads:
        params = json.loads(Path(beads).read_text())
        positions = np.array(params["bead_positions_sr"])
        scale = ref.data.shape[0] / out.data.shape[0]
        px = params["pixel_nm"] / 2 * scale
        result.update(bead_fwhm(out.data, sr_to_grid(positions, scale), px))
    click.echo(json.dumps(result, indent=1))


def sr_to_grid(positions_sr: np.ndarray, factor: float) -> np.ndarray:
    """Convert SR-grid pixel coordinates to a grid ``factor`` times coarser (pixel centres)."""
    return (np.asarray(positions_sr, float) + 0.5) / factor - 0.5
