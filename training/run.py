"""A training run from start to finish: frames in, checkpoints out, then the export step.

What ``zsdeconvnet train``, ``demo`` and the napari widget run. The export step is passed in
(``export.checkpoint.export_checkpoint``), so training needs nothing from ``export/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from ..physics.psf import read_psf
from ..runtime.errors import InputError, describe
from ..runtime.io import file_sha256, plain_stack_as_z, read_image, write_json

log = logging.getLogger(__name__)

#: ``export(run_dir, output) -> max |onnxruntime - torch|``: what turns a run into a model file
Export = Callable[[Path, Path], float]


def load_frames(
    paths: list[Path], channel: int | None, ndim: int = 2
) -> tuple[list[np.ndarray], dict[str, float]]:
    """The training frames (``YX``) or stacks (``ZYX``) of the files, as float32 ADU, and
    their pixel sizes (nm, per axis letter) where the metadata has them."""
    frames, sizes = [], {}
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
            axes = axes.replace("C", "")
        if ndim == 3:
            axes = plain_stack_as_z(image, axes)
        if ndim == 3 and not axes.endswith("ZYX"):
            raise InputError(
                f"{describe(path)} has axes {axes!r}; 3D training needs a Z stack (ZYX), saved "
                "as an ImageJ hyperstack with slices, not frames"
            )
        frames += [f.astype(np.float32) for f in data.reshape(-1, *data.shape[-ndim:])]
        for letter, value in image.pixel_size_nm.items():
            if letter in sizes and abs(sizes[letter] - value) > 1e-3 * value:
                raise InputError(f"training images have different {letter} pixel sizes")
            sizes[letter] = value
    for k, frame in enumerate(frames):
        if not np.isfinite(frame).all():
            raise InputError(f"training frame {k} contains NaN or Inf pixels; clean the data")
    return frames, sizes


class Cancelled(Exception):
    """Training was stopped by its callback; the run folder holds a resumable checkpoint."""

    def __init__(self, run_dir: Path, iteration: int):
        super().__init__(f"stopped at iteration {iteration}; resume with --resume {run_dir}")
        self.run_dir = run_dir
        self.iteration = iteration


#: What a run folder holds; a new run over an old folder removes exactly these.
RUN_FILES = (
    "checkpoint.pt",
    "config.json",
    "loss.csv",
    "loss.png",
    "preview.png",
    "psf_check.json",
    "report.json",
    "report.png",
)
#: The PSF check of the first training frame, kept for the quality report
PSF_CHECK_JSON = "psf_check.json"


def fresh_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to mix a new run into an old run folder, unless told to start over."""
    if not (run_dir / "checkpoint.pt").exists():
        return
    if not overwrite:
        raise InputError(
            f"run folder {describe(run_dir)} holds an earlier run; continue it with --resume "
            f"{run_dir} or start over with --overwrite"
        )
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def run_training(
    cfg,
    output: Path,
    progress: bool = True,
    resume: Path | None = None,
    overwrite: bool = False,
    callback=None,
    distributed: bool = False,
    *,
    export: Export,
) -> Path:
    """Train per ``cfg``, then ``export(run_dir, output)``; returns the run folder.

    ``callback(iteration, total)``, if given, is called after every step; returning False
    stops the run at a checkpoint (resumable) and nothing is exported: :class:`Cancelled`.
    ``distributed``: this process is one rank of a ``torchrun`` launch (DDP); rank 0 writes.
    """
    from . import distributed as ddp

    world = ddp.start(cfg.device) if distributed else ddp.SINGLE
    try:
        return _train_and_export(cfg, output, progress, resume, overwrite, callback, world, export)
    finally:
        ddp.stop(world)


def _train_and_export(
    cfg, output, progress, resume, overwrite, callback, world, export: Export
) -> Path:
    from . import distributed as ddp
    from .trainer import Trainer

    images = [Path(p) for p in cfg.images]
    psf_path = Path(cfg.psf)
    run_dir = resume or output.with_name(output.stem + "_training")
    if resume is None and world.is_main:
        fresh_run_dir(run_dir, overwrite)
    ddp.barrier(world)  # the other ranks start once rank 0 has cleared the folder
    own_dir = run_dir if world.is_main else None  # only rank 0 writes
    z_step, sampler, psf_record = None, None, None
    if cfg.mode == "sim2d":
        from .datasim import prepare_sim_training

        frames, psf, pixel_nm, sampler = prepare_sim_training(cfg, psf_path, own_dir)
    else:
        frames, image_sizes = load_frames(images, cfg.channel, cfg.ndim)
        pixel_nm = cfg.pixel_size_nm or image_sizes.get("X")
        psf = read_psf(
            psf_path,
            cfg.ndim,
            pixel_size_nm=cfg.psf_pixel_size_nm or None,
            z_step_nm=cfg.psf_z_step_nm or None,
        )
        if pixel_nm is None:
            pixel_nm = psf.pixel_size_nm[-1]
            log.warning(
                "no pixel size in %s or --pixel-size: assuming the PSF's, %.4g nm",
                images[0].name,
                pixel_nm,
            )
        if cfg.ndim == 3:
            z_step = cfg.z_step_nm or image_sizes.get("Z")
            if z_step is None:
                raise InputError(
                    f"{describe(images[0])} has no z step in its metadata; give --z-step (nm)"
                )
    trainer = Trainer(
        cfg, frames, psf, pixel_nm, own_dir, z_step_nm=z_step, world=world, sampler=sampler
    )
    trainer.psf_sha256 = file_sha256(psf_path)
    if world.is_main and resume is None and cfg.mode != "sim2d":  # once the inputs are valid
        psf_record = _check_psf(frames[0], psf, pixel_nm, z_step, cfg.psf_check)
    if resume is not None:
        trainer.load_checkpoint(resume)
    if world.is_main:
        ranks = f", {world.size} processes (DDP)" if world.size > 1 else ""
        click.echo(
            f"training {cfg.mode} on {len(frames)} {'stack' if cfg.ndim == 3 else 'frame'}(s), "
            f"{trainer.device}{' (bf16 autocast)' if trainer.bf16 else ''}{ranks}, "
            f"{'from the 2D prior' if trainer.cfg.init == 'prior' else 'from scratch'}"
            + "".join(f", {n.describe()}" for n in trainer.sampler.noise[:1]),
            err=True,
        )
    if cfg.time_budget_s is not None and world.size > 1:
        raise InputError("--time-budget is for one training process; leave it out with torchrun")
    trainer.train(progress=progress, callback=callback)
    done = trainer.cfg
    if done.budgeted_s is not None and world.is_main:
        click.echo(
            f"time budget {done.budgeted_s:g} s: {done.iterations} iterations chosen from the "
            f"measured step time, trained in {trainer.elapsed:.0f} s",
            err=True,
        )
    if trainer.cancelled:
        raise Cancelled(run_dir, trainer.iteration)
    if not world.is_main:
        ddp.barrier(world)  # wait for rank 0's export, so torchrun ends when the model exists
        return run_dir
    if psf_record is not None:  # kept for the quality report that export writes
        write_json(run_dir / PSF_CHECK_JSON, psf_record)
    diff = export(run_dir, output)
    ddp.barrier(world)
    from ..runtime.reach import halo_note

    click.echo(
        f"wrote {output} (onnxruntime vs torch max |diff| {diff:.1e}; {halo_note(output)}); "
        f"checkpoint, loss log, plots and report in {run_dir}",
        err=True,
    )
    click.echo(quality_note(output), err=True)
    return run_dir


def quality_note(path: Path) -> str:
    """The model's quality summary and its warnings, for the end of ``train``."""
    from ..runtime.model import Model

    quality = Model(path, provider="cpu", self_check=False).metadata.quality
    if quality is None:
        return "quality: no report (the training image was not readable, or a SIM model)"
    return "\n".join([quality["summary"], *(f"warning: {w}" for w in quality["warnings"])])


def _check_psf(frame, psf, pixel_nm: float, z_step, enabled: bool) -> dict | None:
    """The PSF against the first training frame (``physics.psf_check``): one line, a warning
    when they disagree; returns the record for the quality report."""
    from ..physics.psf_check import check_psf_against_data

    if not enabled:
        return None
    sizes = (pixel_nm, pixel_nm) if frame.ndim == 2 else (z_step, pixel_nm, pixel_nm)
    result = check_psf_against_data(frame, sizes, psf)
    if result.warns:
        log.warning("%s", result.message())
    else:
        click.echo(result.message(), err=True)
    return result.to_dict()
