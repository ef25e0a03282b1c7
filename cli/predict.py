"""``predict`` and ``info``: restore images with a model file, and describe one.

The runtime's own commands: nothing here imports torch or scipy.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import click

from ..runtime.errors import InputError
from ..runtime.tiling import DEFAULT_TILE, OVERLAPS
from ..runtime.zarr_io import is_zarr
from .main import friendly_errors


def expand_inputs(patterns: tuple[str, ...]) -> list[Path]:
    """Files from paths, directories (their ``.tif``/``.tiff``) and glob patterns, in order."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if is_zarr(path):
            found.append(path)
        elif path.is_dir():
            found += sorted(
                p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".zarr")
            )
        elif any(ch in pattern for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(pattern))
        else:
            found.append(path)
    if not found:
        raise InputError(f"no input files match {' '.join(patterns)}; check the paths")
    return found


def output_plan(
    inputs: list[Path], output: Path, denoised: Path | None, zarr: bool = False
) -> list[tuple[Path, Path, Path | None]]:
    """Pair each input with its output paths (a directory when there are several inputs).

    In a directory, outputs keep the input's name; with ``zarr`` they are ``STEM.zarr``. An
    output that is one of the inputs is refused whatever the flags: inputs are never replaced.
    """
    if len(inputs) == 1 and (not output.is_dir() or is_zarr(output)):
        jobs = [(inputs[0], output, denoised)]
        _refuse_overlaps(inputs, jobs)
        return jobs
    if output.exists() and not output.is_dir():
        raise InputError(
            f"{len(inputs)} inputs need -o to be a directory, but '{output}' is a file"
        )
    if denoised is not None and denoised.exists() and not denoised.is_dir():
        raise InputError(
            f"with several inputs --denoised must be a directory, '{denoised}' is a file"
        )
    names = [p.stem + ".zarr" if zarr else p.name for p in inputs]
    if len(set(names)) != len(names):
        raise InputError("several inputs share a file name; their outputs would collide")
    jobs = [
        (p, output / name, denoised / name if denoised else None) for p, name in zip(inputs, names)
    ]
    _refuse_overlaps(inputs, jobs)
    output.mkdir(parents=True, exist_ok=True)
    if denoised is not None:
        denoised.mkdir(parents=True, exist_ok=True)
    return jobs


def _same_path(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _refuse_overlaps(inputs: list[Path], jobs: list[tuple[Path, Path, Path | None]]) -> None:
    """Refuse outputs that are inputs (``--overwrite`` included) or that are each other."""
    for _, out, den in jobs:
        for target, option in ((out, "-o"), (den, "--denoised")):
            if target is None:
                continue
            clash = next((p for p in inputs if _same_path(p, target)), None)
            if clash is not None:
                raise InputError(
                    f"output '{target}' ({option}) is the input '{clash}'; inputs are never "
                    "replaced: write the result to another file or folder"
                )
        if den is not None and _same_path(out, den):
            raise InputError(f"-o and --denoised both name '{out}'; give two different paths")


class OverlapType(click.ParamType):
    """``effective``, ``exact`` or a non-negative number of pixels."""

    name = "effective|exact|PX"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value in OVERLAPS:
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of px, 'effective' or 'exact'", param, ctx)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output TIFF (one input) or directory (several inputs).",
)
@click.option(
    "--denoised",
    type=click.Path(path_type=Path),
    help="Also write stage 1's denoised image here (file or directory).",
)
@click.option(
    "--tile",
    default=DEFAULT_TILE,
    show_default=True,
    type=int,
    help="Largest tile in y and x (input px; each axis is split into equal tiles of at most "
    "this); 0 = whole frame.",
)
@click.option(
    "--tile-z", default=0, type=int, help="Tile size in z for 3D models; 0 = whole depth."
)
@click.option(
    "--overlap",
    type=OverlapType(),
    default="effective",
    show_default=True,
    help="Context per tile side in px: effective = the model's halo measured at export "
    "(every output within 1e-5 of the output range of an untiled pass; frames that fit in "
    "memory go stage by stage where the model records each stage's reach; the exact halo for "
    "models without one), exact = the receptive-field radius (tiled equals untiled), or a "
    "number.",
)
@click.option(
    "--overlap-z",
    type=OverlapType(),
    default="effective",
    show_default=True,
    help="The same in planes for 3D models.",
)
@click.option(
    "--batch",
    default=1,
    show_default=True,
    type=int,
    help="Tiles per inference call (raise it on a GPU).",
)
@click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
    default="auto",
    show_default=True,
    help="onnxruntime execution provider.",
)
@click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option(
    "--padding",
    type=click.Choice(["reflect", "edge"]),
    default="reflect",
    show_default=True,
    help="How the image is extended beyond its border.",
)
@click.option(
    "--channel",
    type=int,
    default=None,
    help="Channel of a multi-channel file (default: the model's training channel).",
)
@click.option(
    "--rescale",
    is_flag=True,
    help="Write uint16 rescaled to percentiles 3-100 (the reference's output).",
)
@click.option(
    "--ensemble",
    is_flag=True,
    help="Average the 8 orientations of each frame (8x slower, less noise).",
)
@click.option(
    "--io-binding",
    is_flag=True,
    help="Use onnxruntime I/O binding (fewer copies on a GPU).",
)
@click.option(
    "--damp-stripes",
    is_flag=True,
    help="Suppress sCMOS fixed-pattern stripes (Fourier damping of the outputs).",
)
@click.option(
    "--dask",
    "dask_spec",
    metavar="local[:N]|tcp://HOST:PORT",
    default=None,
    help="Run on Dask: a local cluster of N worker processes, or a running scheduler.",
)
@click.option(
    "--zarr",
    "to_zarr",
    is_flag=True,
    help="With several inputs, write OME-Zarr outputs (STEM.zarr) in the -o folder.",
)
@click.option(
    "--block",
    default=2048,
    show_default=True,
    type=int,
    help="OME-Zarr outputs: input px per task side (y, x); blocks run in parallel.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Finish a killed run: skip finished outputs and OME-Zarr blocks.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def predict(
    model,
    inputs,
    output,
    denoised,
    tile,
    tile_z,
    overlap,
    overlap_z,
    batch,
    provider,
    threads,
    padding,
    channel,
    rescale,
    ensemble,
    io_binding,
    damp_stripes,
    dask_spec,
    to_zarr,
    block,
    resume,
    overwrite,
    quiet,
):
    """Restore INPUTS (TIFF files, directories or glob patterns) with MODEL.

    Writes the deconvolved (super-resolved) image, float32 in input intensity units, with
    pixel sizes halved in y and x. Tiles overlap by the model's effective halo (measured at
    export; stage by stage, each stage with its own reach, where the model records it), so the
    result has no seams and equals an untiled pass to 1e-5 of the output range (--overlap
    exact: to float rounding). Outputs named *.zarr are OME-Zarr (multiscale, written
    chunk by chunk, resumable); inputs may be OME-Zarr too. --dask spreads files, frames and
    blocks over worker processes or a cluster with the same result.

    \b
    Examples:
      zsdeconvnet predict model.onnx cell.tif -o cell_sr.tif --denoised cell_dn.tif
      zsdeconvnet predict model.onnx 'movie/*.tif' -o restored/ --provider cuda
      zsdeconvnet predict model.onnx big.zarr -o big_sr.zarr --dask local:2
    """
    from ..runtime.model import Model
    from ..runtime.predict import PredictOptions, Predictor

    options = PredictOptions(
        tile=tile or None,
        tile_z=tile_z or None,
        overlap=overlap,
        overlap_z=overlap_z,
        batch=batch,
        pad_mode=padding,
        channel=channel,
        rescale=rescale,
        damp_stripes=damp_stripes,
        ensemble=ensemble,
        progress=not quiet,
    )
    files = expand_inputs(inputs)
    jobs = output_plan(files, output, denoised, zarr=to_zarr)
    if dask_spec or resume or any(is_zarr(p) for job in jobs for p in job if p is not None):
        _predict_blocks(
            model, provider, threads, io_binding, options, jobs, dask_spec, block, resume, overwrite
        )
        return
    loaded = Model(model, provider=provider, threads=threads, io_binding=io_binding)
    click.echo(
        f"model {model.name}: {loaded.metadata.ndim}D, running on {loaded.active_provider}",
        err=True,
    )
    Predictor(loaded, options).predict_files(jobs, overwrite=overwrite)
    for _, out, den in jobs:
        click.echo(f"wrote {out}" + (f" and {den}" if den else ""), err=True)


def _predict_blocks(
    model, provider, threads, io_binding, options, jobs, dask_spec, block, resume, overwrite
) -> None:
    """``predict`` through the task runner (OME-Zarr outputs, --dask, --resume)."""
    from ..runtime.distributed import Job, open_executor, run_jobs
    from ..runtime.tasks import ModelSpec

    with open_executor(dask_spec, threads) as (executor, worker_threads):
        click.echo(f"model {model.name}: running on {executor.description}", err=True)
        spec = ModelSpec(str(model.resolve()), provider, worker_threads, io_binding)
        run_jobs([Job(*j) for j in jobs], spec, options, executor, overwrite, resume, block)
    for _, out, den in jobs:
        click.echo(f"wrote {out}" + (f" and {den}" if den else ""), err=True)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
    default="auto",
    show_default=True,
    help="onnxruntime execution provider to load it with.",
)
@friendly_errors
def info(model, provider):
    """Describe MODEL (its metadata contract) and which execution provider would run it.

    \b
    Example:
      zsdeconvnet info models/nuclei2d.onnx
    """
    import onnxruntime as ort

    from ..runtime.model import Model, installed_onnxruntime_distributions
    from ..runtime.selfcheck import int8_kernels, run_self_check

    loaded = Model(model, provider=provider, self_check=False)
    click.echo(f"model          : {model} ({os.path.getsize(model) / 1e6:.1f} MB)")
    click.echo(loaded.metadata.summary())
    click.echo(f"onnxruntime    : {ort.__version__}, available {ort.get_available_providers()}")
    click.echo(f"runs on        : {loaded.active_provider} ({int8_kernels()})")
    if loaded.metadata.self_check is not None:
        try:
            scores = run_self_check(loaded.run, loaded.metadata.self_check, "this model")
        except InputError as err:
            click.echo(f"self-check here: FAILS, predict refuses it: {err}")
        else:
            measured = ", ".join(f"{k} {v:.1f} dB" for k, v in scores.items())
            click.echo(f"self-check here: passes ({measured})")
    dists = installed_onnxruntime_distributions()
    if len(dists) > 1:
        click.echo(
            f"warning        : several onnxruntime packages are installed ({', '.join(dists)}); "
            "they overwrite each other. Uninstall all, then install one "
            "(README, 'GPU install').",
            err=True,
        )
