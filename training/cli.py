"""``zsdeconvnet train`` and ``export``: zero-shot training and checkpoint export."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import click
import numpy as np
import torch  # noqa: F401  (fail at import: the lazy CLI turns this into an install hint)

from ..runtime.cli import expand_inputs, friendly_errors
from ..runtime.errors import InputError, describe
from ..runtime.io import check_writable, read_image
from ..runtime.psf import read_psf

log = logging.getLogger(__name__)


def load_frames(paths: list[Path], channel: int | None) -> tuple[list[np.ndarray], float | None]:
    """All 2D frames of the training files (ADU, float32) and their pixel size (nm) if known."""
    frames, sizes = [], set()
    for path in paths:
        image = read_image(path, memmap=False)
        data, axes = np.asarray(image.data), image.axes
        if "C" in axes:
            n = data.shape[axes.index("C")]
            if channel is None and n > 1:
                raise InputError(
                    f"{describe(path)} has {n} channels; choose one with --channel 0..{n - 1} "
                    "(one model per structure and wavelength)"
                )
            c = channel or 0
            if not 0 <= c < n:
                raise InputError(f"{describe(path)} has {n} channels; --channel {c} does not exist")
            data = np.take(data, c, axis=axes.index("C"))
        frames += [f.astype(np.float32) for f in data.reshape(-1, *data.shape[-2:])]
        if "X" in image.pixel_size_nm:
            sizes.add(round(image.pixel_size_nm["X"], 3))
    for k, frame in enumerate(frames):
        if not np.isfinite(frame).all():
            raise InputError(f"training frame {k} contains NaN or Inf pixels; clean the data")
    if len(sizes) > 1:
        raise InputError(f"training images have different pixel sizes {sorted(sizes)} nm")
    return frames, (sizes.pop() if sizes else None)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_training(cfg, output: Path, progress: bool = True, resume: Path | None = None) -> Path:
    """Train per ``cfg``, export to ``output``; returns the run folder."""
    from .export_model import export_checkpoint
    from .trainer import Trainer

    images = [Path(p) for p in cfg.images]
    frames, image_px = load_frames(images, cfg.channel)
    pixel_nm = cfg.pixel_size_nm or image_px
    psf_path = Path(cfg.psf)
    psf = read_psf(psf_path, 2, pixel_size_nm=cfg.psf_pixel_size_nm or None)
    if pixel_nm is None:
        pixel_nm = psf.pixel_size_nm[-1]
        log.warning(
            "no pixel size in %s or --pixel-size: assuming the PSF's, %.4g nm",
            images[0].name,
            pixel_nm,
        )
    run_dir = resume or output.with_name(output.stem + "_training")
    trainer = Trainer(cfg, frames, psf, pixel_nm, run_dir)
    trainer.psf_sha256 = file_sha256(psf_path)
    if resume is not None:
        trainer.load_checkpoint(resume)
    click.echo(
        f"training on {len(frames)} frame(s), {trainer.device}, "
        f"{'; '.join(n.describe() for n in trainer.sampler.noise[:1])}",
        err=True,
    )
    trainer.train(progress=progress)
    diff = export_checkpoint(run_dir, output)
    click.echo(
        f"wrote {output} (onnxruntime vs torch max |diff| {diff:.1e}); "
        f"checkpoint, loss log and plots in {run_dir}",
        err=True,
    )
    return run_dir


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
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same result).")
@click.option("--pixel-size", type=float, default=None, help="Camera pixel size (nm).")
@click.option("--psf-pixel-size", type=float, default=None, help="PSF pixel size (nm).")
@click.option(
    "--background",
    type=float,
    default=None,
    help="Camera background/offset (ADU); estimated when not given.",
)
@click.option("--channel", type=int, default=None, help="Channel of multi-channel files.")
@click.option("--mode", type=click.Choice(["2d"]), default="2d", show_default=True)
@click.option("--batch-size", type=int, default=None)
@click.option("--patch-size", type=int, default=None)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--threads", type=int, default=None, help="CPU threads.")
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
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def train(
    images,
    psf,
    output,
    preset,
    iterations,
    seed,
    pixel_size,
    psf_pixel_size,
    background,
    channel,
    mode,
    batch_size,
    patch_size,
    device,
    threads,
    config_file,
    resume,
    overwrite,
    quiet,
):
    """Train ZS-DeconvNet on IMAGES (the noisy data itself) and export an ONNX model.

    No clean data is needed: the images are recorrupted into independent noisy pairs. Pixel
    sizes come from the TIFF metadata or the options; without any, PSF and image are taken to
    share one pixel size.

    \b
    Examples:
      zsdeconvnet psf -o psf.tif --na 1.49 --wavelength 525 --pixel-size 62.6
      zsdeconvnet train cell.tif --psf psf.tif -o cell.onnx
      zsdeconvnet train movie.tif --psf psf.tif -o m.onnx --preset paper --device cuda
      zsdeconvnet train --resume cell_training -o cell.onnx --overwrite
    """
    from .config import TrainConfig
    from .config import preset as make_preset
    from .trainer import load_checkpoint

    check_writable(output, overwrite or resume is not None)
    overrides = dict(
        iterations=iterations,
        seed=seed,
        pixel_size_nm=pixel_size,
        psf_pixel_size_nm=psf_pixel_size,
        background=background,
        channel=channel,
        batch_size=batch_size,
        patch_size=patch_size,
        threads=threads,
    )
    if resume is not None:
        import json

        cfg = TrainConfig(**json.loads(load_checkpoint(resume)["config"]))
        if iterations:
            cfg = cfg.replace(iterations=iterations)
    else:
        if not images or psf is None:
            raise InputError("give the training IMAGES and --psf (or --resume a run folder)")
        paths = [str(p) for p in expand_inputs(images)]
        if config_file is not None:
            base = TrainConfig.load(config_file)
            changes = {k: v for k, v in overrides.items() if v is not None}
            cfg = base.replace(images=paths, psf=str(psf), device=device, **changes)
        else:
            cfg = make_preset(
                preset, images=paths, psf=str(psf), mode=mode, device=device, **overrides
            )
    run_training(cfg, output, progress=not quiet, resume=resume)


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="Write a static-int8 model calibrated on the training image (CPU speed).",
)
@click.option(
    "--min-psnr",
    type=float,
    default=45.0,
    show_default=True,
    help="Refuse a quantised model whose outputs differ from fp32 more than this (dB).",
)
@click.option("--overwrite", is_flag=True)
@friendly_errors
def export(checkpoint, output, quantize, min_psnr, overwrite):
    """Export a training CHECKPOINT (file or run folder) to a self-describing ONNX model.

    The export is checked against torch on the training image (max |diff| <= 1e-4 in the
    normalised domain); a model that fails is not written.

    \b
    Examples:
      zsdeconvnet export cell_training -o cell.onnx
      zsdeconvnet export cell_training -o cell_int8.onnx --quantize int8
    """
    from ..export.onnx import ExportError
    from .export_model import export_checkpoint

    check_writable(output, overwrite)
    try:
        diff = export_checkpoint(checkpoint, output, quantize, min_psnr)
    except ExportError as err:
        raise InputError(str(err)) from None
    click.echo(
        f"wrote {output} (onnxruntime vs torch max |diff| {diff:.1e}"
        f"{'; int8, checked against fp32' if quantize else ''})"
    )


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--denoised", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--iterations",
    type=int,
    default=50,
    show_default=True,
    help="Fine-tuning iterations per frame.",
)
@click.option("--channel", type=int, default=None)
@click.option("--overwrite", is_flag=True)
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
    from .adapt import adapt_and_restore

    check_writable(output, overwrite)
    if denoised is not None:
        check_writable(denoised, overwrite)
    source = read_image(image, memmap=False)
    frames, _ = load_frames([image], channel)
    results = adapt_and_restore(str(checkpoint), frames, iterations=iterations)
    axes = source.axes.replace("C", "")  # one channel was chosen
    shape = np.asarray(source.data).shape
    lead = tuple(n for a, n in zip(source.axes[:-2], shape[:-2]) if a != "C")
    sr = np.stack([r[1] for r in results]).reshape(*lead, *results[0][1].shape)
    sizes = {k: v / 2 if k in "XY" else v for k, v in source.pixel_size_nm.items()}
    write_tiff(output, sr, axes, sizes)
    if denoised is not None:
        dn = np.stack([r[0] for r in results]).reshape(*lead, *results[0][0].shape)
        write_tiff(denoised, dn, axes, source.pixel_size_nm)
    click.echo(f"wrote {output} ({len(frames)} frame(s), {iterations} iterations each)")
