"""``zsdeconvnet train`` and ``export``: zero-shot training and checkpoint export."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np
import torch  # noqa: F401  (fail at import: the lazy CLI turns this into an install hint)

from ..runtime.errors import InputError
from ..runtime.io import check_writable, read_image
from .main import friendly_errors
from .predict import expand_inputs

log = logging.getLogger(__name__)


#: With --time-budget and no --iterations: the most a budget may buy (3x the 6000 iterations
#: that converged on the simulator, benchmarks/RESULTS.md)
MAX_BUDGET_ITERATIONS = 20_000


@click.command()
@click.argument("images", nargs=-1)
@click.option(
    "--psf",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PSF TIFF (measured, or from 'zsdeconvnet psf').",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Model file to write (.onnx); the run folder goes beside it.",
)
@click.option(
    "--preset",
    type=click.Choice(["fast", "paper"]),
    default="fast",
    show_default=True,
    help="fast: tuned for a CPU; paper: the reference network and schedule.",
)
@click.option("--iterations", type=int, default=None, help="Training iterations.")
@click.option(
    "--time-budget",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Train for about this long (export not counted): the step time is measured and the "
    "iteration count chosen to fit (--iterations, if given, is the most it may choose).",
)
@click.option(
    "--init",
    type=click.Choice(["auto", "prior", "scratch"]),
    default=None,
    help="Where 2D training starts: prior = the shipped 2D prior (trained zero-shot on "
    "simulated data), fine-tuned on IMAGES with your PSF; scratch = random weights (the "
    "paper's method); auto = the prior where the network and PSF fit it.  [default: auto]",
)
@click.option(
    "--prior",
    "prior_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A prior file made by benchmarks/train_prior.py (your own simulator or distribution) "
    "instead of the shipped one; loaded as weights only.",
)
@click.option("--lr", type=float, default=None, help="Learning rate (Adam), the preset's if unset.")
@click.option(
    "--hessian-weight",
    type=float,
    default=None,
    help="Weight of the Hessian smoothness penalty; lower keeps point-like objects sharper "
    "(3D beads: 0.001 with --lr 1e-3, see the README), higher suppresses artefacts.",
)
@click.option(
    "--positivity/--no-positivity",
    default=None,
    help="3D: non-negative deconvolved output above the stack's estimated background "
    "(on in the fast 3D preset).",
)
@click.option(
    "--psf-check/--no-psf-check",
    default=None,
    help="Check the PSF against the image before training (a warning when they disagree; "
    "see 'zsdeconvnet check-psf').  [default: on]",
)
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same result).")
@click.option("--pixel-size", type=float, default=None, help="Camera pixel size (nm).")
@click.option("--psf-pixel-size", type=float, default=None, help="PSF pixel size (nm).")
@click.option(
    "--background",
    type=float,
    default=None,
    help="Camera background/offset (ADU); estimated when not given.",
)
@click.option(
    "--gain",
    type=click.FloatRange(min=1e-6, max=1e6),
    default=None,
    help="Camera gain (ADU per photo-electron): how fast the noise grows with the signal. "
    "Measured from the image's noise when not given (1 where it cannot be).",
)
@click.option("--channel", type=int, default=None, help="Channel of multi-channel files.")
@click.option(
    "--mode",
    type=click.Choice(["auto", "2d", "3d", "sim2d"]),
    default="auto",
    show_default=True,
    help="auto: 3D when the file is a Z stack, else 2D; sim2d: raw 2D-SIM stacks "
    "(angles x phases frames), reconstructed here (ZS-DeconvNet-SIM).",
)
@click.option("--z-step", type=float, default=None, help="Stack z step (nm), 3D.")
@click.option("--psf-z-step", type=float, default=None, help="PSF z step (nm), 3D.")
@click.option(
    "--batch-size", type=int, default=None, help="Patches per step (default: the preset's)."
)
@click.option(
    "--patch-size",
    type=int,
    default=None,
    help="Training patch side (input px; default: the preset's).",
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--threads", type=int, default=None, help="CPU threads.")
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "off"]),
    default=None,
    help="Mixed precision (2D): auto = bf16 on CUDA and on CPUs with native bf16 "
    "(AVX512-BF16/AMX), else fp32.  [default: auto]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Rerun a saved config.json (options given here override it).",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Continue a killed run from its folder.",
)
@click.option(
    "--distributed",
    is_flag=True,
    help="One rank of a torchrun launch: data-parallel over its processes (NCCL on GPUs, gloo "
    "on CPU); the global --batch-size and schedule are kept.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def train(
    images,
    psf,
    output,
    preset,
    iterations,
    time_budget,
    init,
    prior_file,
    lr,
    hessian_weight,
    positivity,
    psf_check,
    seed,
    pixel_size,
    psf_pixel_size,
    background,
    gain,
    channel,
    mode,
    z_step,
    psf_z_step,
    batch_size,
    patch_size,
    device,
    threads,
    amp,
    config_file,
    resume,
    distributed,
    overwrite,
    quiet,
):
    """Train ZS-DeconvNet on IMAGES (the noisy data itself) and export an ONNX model.

    No clean data is needed: 2D images are recorrupted into independent noisy pairs; 3D stacks
    are split into odd and even slices (with gap-amending regularisation). Pixel sizes and z
    steps come from the TIFF metadata or the options; without a pixel size, PSF and image are
    taken to share one.

    \b
    Examples:
      zsdeconvnet psf -o psf.tif --na 1.49 --wavelength 525 --pixel-size 62.6
      zsdeconvnet train cell.tif --psf psf.tif -o cell.onnx
      zsdeconvnet train cell.tif --psf psf.tif -o cell.onnx --time-budget 180
      zsdeconvnet train cell.tif --psf psf.tif -o cell.onnx --init scratch
      zsdeconvnet train movie.tif --psf psf.tif -o m.onnx --preset paper --device cuda
      zsdeconvnet train --resume cell_training -o cell.onnx --overwrite
      zsdeconvnet train stack.tif --psf psf3d.tif -o stack.onnx --mode 3d --z-step 200
      zsdeconvnet train raw_sim.tif --psf psf.tif -o sim.onnx --mode sim2d
      torchrun --standalone --nproc-per-node 4 -m zsdeconvnet train cell.tif --psf psf.tif \\
          -o cell.onnx --preset paper --device cuda --distributed
    """
    from ..export.checkpoint import export_checkpoint
    from ..training.config import TrainConfig
    from ..training.config import preset as make_preset
    from ..training.run import run_training
    from ..training.trainer import load_checkpoint

    check_writable(output, overwrite or resume is not None)
    overrides = dict(
        iterations=iterations,
        init=init,
        prior_file=None if prior_file is None else str(prior_file),
        lr=lr,
        hessian_weight=hessian_weight,
        positivity=positivity,
        psf_check=psf_check,
        seed=seed,
        pixel_size_nm=pixel_size,
        psf_pixel_size_nm=psf_pixel_size,
        background=background,
        gain=gain,
        channel=channel,
        batch_size=batch_size,
        patch_size=patch_size,
        threads=threads,
        amp=amp,
        z_step_nm=z_step,
        psf_z_step_nm=psf_z_step,
    )
    if time_budget is not None:
        overrides["time_budget_s"] = time_budget
        overrides["iterations"] = iterations or MAX_BUDGET_ITERATIONS
    if resume is not None:
        cfg = TrainConfig.from_json(load_checkpoint(resume)["config"])
        if iterations:
            cfg = cfg.replace(iterations=iterations)
    else:
        if not images or psf is None:
            raise InputError("give the training IMAGES and --psf (or --resume a run folder)")
        paths = [str(p) for p in expand_inputs(images)]
        if mode == "auto":
            axes = read_image(paths[0]).axes
            mode = "3d" if "Z" in axes else "2d"
            log.info("mode %s (axes %s of %s)", mode, axes, paths[0])
        if config_file is not None:
            base = TrainConfig.load(config_file)
            changes = {k: v for k, v in overrides.items() if v is not None}
            cfg = base.replace(images=paths, psf=str(psf), device=device, **changes)
        else:
            cfg = make_preset(
                preset, images=paths, psf=str(psf), mode=mode, device=device, **overrides
            )
    run_training(
        cfg,
        output,
        progress=not quiet,
        resume=resume,
        overwrite=overwrite,
        distributed=distributed,
        export=export_checkpoint,
    )


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ONNX model to write.",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8", "fp16"]),
    default=None,
    help="int8: static int8 calibrated on the training image (CPU speed); fp16: half "
    "precision (GPU speed). Either is checked against fp32 (--min-psnr).",
)
@click.option(
    "--min-psnr",
    type=float,
    default=45.0,
    show_default=True,
    help="Refuse a quantised model whose outputs differ from fp32 more than this (dB).",
)
@click.option(
    "--bioimageio",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also (or only) write a bioimage.io model package (.zip, spec 0.5) for deepImageJ, "
    "ilastik, BiaPy (needs the 'bioimageio' extra).",
)
@click.option(
    "--image",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With an older .onnx as CHECKPOINT: its training image, to measure the model's "
    "effective halo on (written into a copy, -o).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@friendly_errors
def export(checkpoint, output, quantize, min_psnr, bioimageio, image, overwrite):
    """Export a training CHECKPOINT (file or run folder) to a self-describing ONNX model.

    The export is checked against torch on the training image (max |diff| <= 1e-4 in the
    normalised domain); a model that fails is not written. The model's effective halo (the
    tile context that keeps every output within 1e-5 of the output range of an untiled pass)
    is measured on the training image and a noise image and written into its metadata;
    'predict' uses it by default. An older .onnx as CHECKPOINT, with --image, gets a copy
    with its effective halo measured.

    \b
    Examples:
      zsdeconvnet export cell_training -o cell.onnx
      zsdeconvnet export cell_training -o cell_int8.onnx --quantize int8
      zsdeconvnet export cell_training -o cell_fp16.onnx --quantize fp16   # for GPUs
      zsdeconvnet export cell_training --bioimageio cell.bioimageio.zip
      zsdeconvnet export old.onnx --image cell.tif -o old_measured.onnx
    """
    from ..export.checkpoint import export_bioimageio, export_checkpoint
    from ..export.onnx import ExportError
    from ..runtime.reach import halo_note

    if checkpoint.suffix.lower() == ".onnx":
        _upgrade(checkpoint, output, image, quantize or bioimageio, overwrite)
        return
    if image is not None:
        raise InputError("--image is for an older .onnx model as CHECKPOINT; drop it")

    if output is None and bioimageio is None:
        raise InputError("give -o MODEL.onnx and/or --bioimageio PACKAGE.zip")
    if bioimageio is not None and quantize is not None:
        raise InputError("--bioimageio packages the fp32 model; export --quantize separately")
    for path in (output, bioimageio):
        if path is not None:
            check_writable(path, overwrite)
    try:
        if output is not None:
            diff = export_checkpoint(checkpoint, output, quantize, min_psnr)
            click.echo(
                f"wrote {output} (onnxruntime vs torch max |diff| {diff:.1e}"
                f"{f'; {quantize}, checked against fp32' if quantize else ''}; "
                f"{halo_note(output)})"
            )
        if bioimageio is not None:
            export_bioimageio(checkpoint, bioimageio, model=output)  # output: fp32 or None
            click.echo(f"wrote {bioimageio} (bioimage.io model package, spec 0.5)")
    except ExportError as err:
        raise InputError(str(err)) from None


def _upgrade(model: Path, output, image, other_options, overwrite) -> None:
    """``export OLD.onnx --image IMG -o NEW.onnx``: measure an older model's effective halo."""
    from ..export.halo import upgrade_model

    if image is None or output is None:
        raise InputError(
            f"{model} is a model, not a checkpoint: give --image (its training image) and "
            "-o NEW.onnx to write a copy with its effective halo measured"
        )
    if other_options:
        raise InputError("--quantize and --bioimageio take a training checkpoint, not a model")
    check_writable(output, overwrite)
    if output.resolve() == model.resolve():
        raise InputError(f"-o {output} is the input model; write the copy to another file")
    data = read_image(image).data
    record = upgrade_model(model, output, np.asarray(data, np.float32))
    halo = "exact (fp16 model)" if record is None else "x".join(map(str, record["halo"])) + " px"
    click.echo(f"wrote {output} (effective halo {halo})")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Deconvolved (super-resolved) TIFF to write.",
)
@click.option(
    "--denoised",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write stage 1's denoised TIFF here.",
)
@click.option(
    "--iterations",
    type=int,
    default=50,
    show_default=True,
    help="Fine-tuning iterations per frame.",
)
@click.option(
    "--channel", type=int, default=None, help="Channel of a multi-channel file (default: 0)."
)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@friendly_errors
def adapt(checkpoint, image, output, denoised, iterations, channel, overwrite):
    """Restore each frame of IMAGE after fine-tuning a copy of the model on it.

    Test-time adaptation for time series whose structures change (e.g. mitosis): the model of
    the training run CHECKPOINT (file or folder) is fine-tuned for --iterations on every frame
    before that frame is restored. Needs torch; the result is written like 'predict' writes it.

    \b
    Example:
      zsdeconvnet adapt cell_training movie.tif -o movie_sr.tif --iterations 50
    """
    from ..runtime.io import write_tiff
    from ..training.adapt import adapt_and_restore
    from ..training.config import TrainConfig
    from ..training.run import load_frames
    from ..training.trainer import load_checkpoint

    check_writable(output, overwrite)
    if denoised is not None:
        check_writable(denoised, overwrite)
    ndim = TrainConfig.from_json(load_checkpoint(checkpoint)["config"]).ndim
    source = read_image(image, memmap=False)
    frames, _ = load_frames([image], channel, ndim)  # 3D models: one ZYX stack per time point
    results = adapt_and_restore(str(checkpoint), frames, iterations=iterations)
    axes = source.axes.replace("C", "")  # one channel was chosen
    shape = [n for a, n in zip(source.axes, np.shape(source.data)) if a != "C"]
    lead = tuple(shape[:-ndim])  # time points (and planes of a 2D model)
    sr = np.stack([r[1] for r in results]).reshape(*lead, *results[0][1].shape)
    sizes = {k: v / 2 if k in "XY" else v for k, v in source.pixel_size_nm.items()}
    write_tiff(output, sr, axes, sizes)
    if denoised is not None:
        dn = np.stack([r[0] for r in results]).reshape(*lead, *results[0][0].shape)
        write_tiff(denoised, dn, axes, source.pixel_size_nm)
    click.echo(f"wrote {output} ({len(frames)} frame(s), {iterations} iterations each)")
