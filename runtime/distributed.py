"""Prediction past one process: many files, time points and blocks of one large image.

The work is cut into tasks (:mod:`.tasks`) and run by an executor: this process, or a Dask
cluster (``dask.distributed``: a ``LocalCluster`` started here, or a running scheduler). The
same tasks run either way, so the outputs are the same bits.

- TIFF outputs: one task per input file (the worker writes the file atomically).
- OME-Zarr outputs: one task per block of tiles per frame (time point, channel). The tiles
  come from the whole frame's plan and each output chunk is one tile's 2x output, so no two
  tasks write the same chunk and every tile is the tile a single process computes. (Dask's
  ``map_overlap`` would trim the halo in input coordinates; the 2x output needs it trimmed in
  output coordinates, which the tile plan does.) Then the pyramid levels, chunk by chunk.
  Finished blocks leave markers, so ``resume`` redoes only what a killed run had not finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .errors import InputError, describe
from .io import check_writable, file_sha256, read_input
from .predict import PredictOptions, Predictor
from .tasks import (
    BlockTask,
    Done,
    FileTask,
    ModelSpec,
    PyramidTask,
    frame_ranges,
    run_block,
    run_file,
    run_pyramid,
    worker_model,
)
from .zarr_io import (
    ZarrOutput,
    check_zarr_output,
    create_zarr_output,
    is_zarr,
    level_chunks,
)

log = logging.getLogger(__name__)

#: default block side (input px per task, y and x): 2048^2 is ~16 MB of float32 in, 64 out
DEFAULT_BLOCK = 2048


class LocalExecutor:
    """Runs tasks one after the other in this process."""

    description = "this process"

    def map(self, fn: Callable, tasks: Sequence, desc: str, progress: bool) -> list[Done]:
        progress = progress and bool(tasks)
        return [fn(t) for t in tqdm(tasks, desc=desc, unit="task", disable=not progress)]


class DaskExecutor:
    """Runs tasks on a dask.distributed cluster; lost workers' tasks are rerun by Dask."""

    def __init__(self, client, description: str):
        self.client = client
        self.description = description

    def map(self, fn: Callable, tasks: Sequence, desc: str, progress: bool) -> list[Done]:
        from distributed import as_completed

        if not tasks:
            return []
        futures = self.client.map(fn, list(tasks), pure=False)
        results = []
        with tqdm(total=len(futures), desc=desc, unit="task", disable=not progress) as bar:
            try:
                for future in as_completed(futures):
                    results.append(future.result())
                    bar.update(1)
            except BaseException:
                self.client.cancel(futures)
                raise
        return results


def parse_dask(spec: str) -> tuple[str, int | None]:
    """``local``, ``local:N`` or a scheduler address -> (kind or address, workers)."""
    if spec == "local" or spec.startswith("local:"):
        count = spec.partition(":")[2]
        if count and not (count.isdigit() and int(count) > 0):
            raise InputError(f"--dask {spec!r}: the worker count must be a positive integer")
        return "local", int(count) if count else None
    if "://" not in spec:
        raise InputError(
            f"--dask {spec!r} is neither 'local[:N]' nor a scheduler address like tcp://HOST:8786"
        )
    return spec, None


@contextlib.contextmanager
def open_executor(
    spec: str | None, threads: int | None
) -> Iterator[tuple[LocalExecutor | DaskExecutor, int | None]]:
    """Yield ``(executor, onnxruntime threads per worker)`` for a ``--dask`` value (or None)."""
    if spec is None:
        yield LocalExecutor(), threads
        return
    kind, workers = parse_dask(spec)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError(
            "--dask needs dask.distributed: pip install 'zsdeconvnet[distributed]'"
        ) from None
    if not log.isEnabledFor(logging.DEBUG):  # the scheduler's chatter only with -vv
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if kind == "local":
        cores = os.cpu_count() or 1
        workers = workers or max(1, cores // 2)
        per_worker = threads or max(1, cores // workers)
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        try:
            yield DaskExecutor(client, f"a local Dask cluster of {workers} workers"), per_worker
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = Client(kind, timeout="20s")
    except (OSError, TimeoutError) as err:
        raise InputError(
            f"cannot reach the Dask scheduler at {kind} ({err}); start one with 'dask scheduler' "
            "and workers with 'dask worker ADDRESS', or use --dask local"
        ) from None
    try:
        yield DaskExecutor(client, f"the Dask scheduler at {kind}"), threads
    finally:
        client.close()


@dataclass
class Job:
    """One input and where its outputs go (``.zarr`` paths are written as OME-Zarr)."""

    input: Path
    output: Path
    denoised: Path | None = None


class _Planner:
    """Turns jobs into tasks on the client (reads metadata and whole-frame ranges only)."""

    def __init__(self, spec: ModelSpec, options: PredictOptions, block: int, resume: bool):
        self.spec = spec
        self.options = options
        self.block = block
        self.resume = resume
        self.predictor = Predictor(worker_model(spec), options)
        self.model_sha = file_sha256(spec.path)
        self.outputs: list[ZarrOutput] = []

    def zarr_tasks(self, job: Job) -> list[BlockTask]:
        options, predictor = self.options, self.predictor
        for flag in ("ensemble", "damp_stripes", "rescale"):
            if getattr(options, flag):
                raise InputError(
                    f"--{flag.replace('_', '-')} works on whole frames; write a TIFF output "
                    "for it (OME-Zarr outputs are written block by block)"
                )
        image = read_input(job.input)
        data, axes = predictor.select(image)
        n_frame = data.ndim - predictor.ndim
        spatial = tuple(data.shape[n_frame:])
        plan = predictor.plan(spatial)
        inner = tuple(s.stop - s.start for s in plan.tiles[0].inner)
        scale = predictor.scale
        sizes = dict(image.pixel_size_nm)
        signature = {
            "model_sha256": self.model_sha,
            "input": str(Path(job.input).resolve()),
            "shape": list(data.shape),
            "axes": axes,
            "tile": list(plan.tile_shape),
            "halo": list(plan.halo),
            "padding": options.pad_mode,
            "channel": options.channel,
        }
        frames = (1,) * n_frame
        sr_sizes = dict(sizes)
        for letter, factor in zip(axes[n_frame:], scale):
            if letter in sr_sizes:
                sr_sizes[letter] /= factor
        offset = {a: -(f - 1) / 2 for a, f in zip(axes[n_frame:], scale)}
        dec = create_zarr_output(
            job.output,
            data.shape[:n_frame] + tuple(s * f for s, f in zip(spatial, scale)),
            frames + tuple(i * f for i, f in zip(inner, scale)),
            axes,
            sr_sizes,
            offset,
            {**signature, "output": "deconvolved"},
            self.resume,
            f"{Path(job.input).name} deconvolved",
        )
        den = None
        if job.denoised is not None:
            den = create_zarr_output(
                job.denoised,
                data.shape,
                frames + inner,
                axes,
                sizes,
                {},
                {**signature, "output": "denoised"},
                self.resume,
                f"{Path(job.input).name} denoised",
            )
        self.outputs += [o for o in (dec, den) if o is not None]
        groups: dict[tuple[int, ...], list] = {}
        per_block = [max(1, self.block // i) if len(plan.tiles) > 1 else 1 for i in inner]
        for tile in plan.tiles:
            index = tuple(s.start // (i * n) for s, i, n in zip(tile.inner, inner, per_block))
            groups.setdefault(index, []).append(tile)
        tasks, skipped = [], 0
        for frame, lo, hi in frame_ranges(predictor, image):
            for index, tiles in groups.items():
                key = "f" + "-".join(map(str, frame)) + "_b" + "-".join(map(str, index))
                if dec.done(key) and (den is None or den.done(key)):
                    skipped += 1
                    continue
                tasks.append(
                    BlockTask(
                        self.spec,
                        options,
                        str(job.input),
                        frame,
                        tuple(tiles),
                        plan.tile_shape,
                        lo,
                        hi,
                        dec,
                        den,
                        key,
                    )
                )
        if skipped:
            log.warning(
                "%s: resuming, %d of %d blocks were already written",
                describe(job.output),
                skipped,
                skipped + len(tasks),
            )
        return tasks

    def file_task(self, job: Job, overwrite: bool) -> FileTask | None:
        outputs = [job.output] + ([job.denoised] if job.denoised else [])
        if self.resume and all(p.exists() for p in outputs):
            log.warning("%s exists: skipped (--resume)", describe(job.output))
            return None
        for path in outputs:
            check_writable(path, overwrite or self.resume)
        return FileTask(
            self.spec,
            self.options,
            str(job.input),
            str(job.output),
            None if job.denoised is None else str(job.denoised),
            overwrite or self.resume,
            key=job.input.name,
        )


def pyramid_tasks(outputs: Sequence[ZarrOutput], level: int) -> list[PyramidTask]:
    """The chunks of ``level`` still to compute, over all outputs that have that level."""
    tasks = []
    for out in outputs:
        if level >= len(out.levels):
            continue
        for n, box in enumerate(level_chunks(out, level)):
            key = f"L{level}_{n}"
            if not out.done(key):
                tasks.append(PyramidTask(out, level, box, key))
    return tasks


def run_jobs(
    jobs: Sequence[Job],
    spec: ModelSpec,
    options: PredictOptions,
    executor: LocalExecutor | DaskExecutor,
    overwrite: bool = False,
    resume: bool = False,
    block: int = DEFAULT_BLOCK,
) -> list[Done]:
    """Restore every job with ``executor``; returns what each task reported.

    Parameters
    ----------
    jobs : sequence of Job
        Inputs (TIFF or OME-Zarr) and outputs (``.zarr``: OME-Zarr, else TIFF).
    spec : ModelSpec
        The model and its session settings (each worker opens it once).
    options : PredictOptions
        Tiling options; with OME-Zarr outputs ``tile`` also sets the output chunk size.
    executor : LocalExecutor or DaskExecutor
        Where the tasks run.
    overwrite, resume : bool
        Replace existing outputs; or finish a killed run (skip finished files and blocks).
    block : int
        Input pixels per block side (y, x) for OME-Zarr outputs: one task each.
    """
    if block < 1:
        raise InputError(f"--block must be positive, got {block}")
    quiet = not options.progress
    options = PredictOptions(**{**options.__dict__, "progress": False})
    planner = _Planner(spec, options, block, resume)
    block_tasks: list[BlockTask] = []
    file_tasks: list[FileTask] = []
    for job in jobs:
        if job.denoised is not None and is_zarr(job.output) != is_zarr(job.denoised):
            raise InputError(
                f"{describe(job.output)} and {describe(job.denoised)} must both be .zarr or "
                "both TIFF"
            )
        if is_zarr(job.output):
            for path in (job.output, job.denoised):
                if path is not None:
                    check_zarr_output(path, overwrite, resume)
    for job in jobs:
        if is_zarr(job.output):
            block_tasks += planner.zarr_tasks(job)
        else:
            task = planner.file_task(job, overwrite)
            if task is not None:
                file_tasks.append(task)
    done = executor.map(run_file, file_tasks, "files", not quiet)
    done += executor.map(run_block, block_tasks, "blocks", not quiet)
    levels = max((len(o.levels) for o in planner.outputs), default=1)
    for level in range(1, levels):
        tasks = pyramid_tasks(planner.outputs, level)
        done += executor.map(run_pyramid, tasks, f"pyramid level {level}", not quiet)
    for out in planner.outputs:
        out.finish()
    return done
