"""``zsdeconvnet psf``, ``check-psf``, ``simulate`` and ``evaluate``: the physics toolkit on the
command line."""

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


@click.command(name="check-psf")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--psf",
    "psf_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PSF TIFF (measured, or from 'zsdeconvnet psf').",
)
@click.option("--pixel-size", type=float, default=None, help="Image pixel size (nm).")
@click.option("--psf-pixel-size", type=float, default=None, help="PSF pixel size (nm).")
@click.option("--z-step", type=float, default=None, help="Image z step (nm), stacks.")
@click.option("--psf-z-step", type=float, default=None, help="PSF z step (nm), stacks.")
@click.option("--channel", type=int, default=None, help="Channel of multi-channel files.")
@click.option(
    "--tolerance",
    type=float,
    default=0.10,
    show_default=True,
    help="Passband mismatch (fraction) tolerated before a warning.",
)
@click.option(
    "--estimate",
    is_flag=True,
    help="Also say which widefield PSF would match the data (give --na and/or --wavelength "
    "to have it in NA or emission wavelength).",
)
@click.option("--na", type=float, default=None, help="The PSF's NA (for --estimate).")
@click.option("--wavelength", type=float, default=None, help="The PSF's emission wavelength (nm).")
@click.option("--json", "as_json", is_flag=True, help="Print the measurement as JSON.")
@friendly_errors
def check_psf(
    image,
    psf_path,
    pixel_size,
    psf_pixel_size,
    z_step,
    psf_z_step,
    channel,
    tolerance,
    estimate,
    na,
    wavelength,
    as_json,
):
    """Check that the PSF fits IMAGE before training on it.

    Fits the image's power spectrum with the PSF's transfer function stretched by a passband
    ratio (data / PSF) and reports whether the PSF is right, too narrow (the data show less
    detail than it passes) or too wide (the data hold detail it cannot pass: ringing), by how
    much, or that the signal is too weak to tell. Stacks (Z axis) are checked in 3D. The exit
    status is 0 in every case; --json gives the numbers to scripts.

    \b
    Examples:
      zsdeconvnet check-psf cell.tif --psf psf.tif
      zsdeconvnet check-psf cell.tif --psf psf.tif --estimate --na 1.49 --wavelength 525
      zsdeconvnet check-psf stack.tif --psf psf3d.tif --z-step 200 --json
    """
    from ..physics.psf import read_psf
    from ..physics.psf_check import check_psf_against_data

    data, sizes, ndim = _one_field(image, channel, pixel_size, z_step)
    psf = read_psf(psf_path, ndim, psf_pixel_size, psf_z_step)
    if sizes is None:
        sizes = psf.pixel_size_nm
        click.echo(
            f"warning: {image} has no pixel size (give --pixel-size); assuming the PSF's, "
            f"{sizes[-1]:g} nm",
            err=True,
        )
    if not 0 < tolerance < 1:
        raise InputError(f"--tolerance {tolerance} must be a fraction between 0 and 1")
    result = check_psf_against_data(data, sizes, psf, tolerance)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
        return
    click.echo(result.message())
    if estimate:
        click.echo(_estimate_line(result, na, wavelength, sizes[-1], ndim))


def _one_field(path: Path, channel, pixel_size, z_step):
    """The first frame (2D) or stack (3D: the file has a Z axis) of an image, its pixel sizes
    per axis (nm; None when neither the file nor the options give one), and 2 or 3."""
    from ..runtime.io import plain_stack_as_z

    image = read_image(path, memmap=False)
    data, axes = np.asarray(image.data), image.axes
    if "C" in axes:
        n = data.shape[axes.index("C")]
        if channel is None and n > 1:
            raise InputError(f"{path} has {n} channels; choose one with --channel 0..{n - 1}")
        if not 0 <= (channel or 0) < n:
            raise InputError(f"{path} has {n} channels; --channel {channel} does not exist")
        data = np.take(data, channel or 0, axis=axes.index("C"))
        axes = axes.replace("C", "")
    if z_step is not None:  # a plain stack of planes given a z step is a Z stack
        axes = plain_stack_as_z(image, axes, notice=False)
    ndim = 3 if "Z" in axes else 2
    if data.ndim < ndim:
        raise InputError(f"{path} has axes {axes!r}; a 3D check needs a Z stack")
    field = data.reshape(-1, *data.shape[-ndim:])[0].astype(np.float64)
    xy = pixel_size or image.pixel_size_nm.get("X")
    if xy is None:
        return field, None, ndim
    if ndim == 2:
        return field, (xy, xy), 2
    z = z_step or image.pixel_size_nm.get("Z")
    if z is None:
        raise InputError(f"{path} has no z step in its metadata; give --z-step (nm)")
    return field, (z, xy, xy), 3


def _estimate_line(result, na, wavelength, pixel_nm: float, ndim: int) -> str:
    """What widefield PSF would match the data, in the user's terms."""
    line = (
        f"best-matching PSF: lateral FWHM {result.matched_fwhm_nm:.0f} nm "
        f"(this PSF {result.psf_fwhm_nm:.0f} nm)"
    )
    if result.verdict == "inconclusive":
        return line + "; unreliable: the data cannot tell"
    if na is not None:
        line += f"; NA {na * result.ratio:.2f} at the same wavelength"
    if wavelength is not None:
        line += f"; emission {wavelength / result.ratio:.0f} nm at the same NA"
    if na is not None and wavelength is not None and na * result.ratio < 1.52:
        z = " --z-step ... --z-size ..." if ndim == 3 else ""
        line += (
            f"\n  zsdeconvnet psf -o matched_psf.tif --na {na * result.ratio:.2f} "
            f"--wavelength {wavelength:g} --pixel-size {pixel_nm:g}{z}"
        )
    return line


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
