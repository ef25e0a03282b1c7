"""A large 2D image from OME-Zarr to OME-Zarr on a local Dask cluster of 1 and 2 workers.

Builds a SIZE x SIZE uint16 OME-Zarr from the real stardist nuclei image (mirrored tiles of it,
Poisson noise), then runs ``predict`` with the same model, tiles and blocks on 1 worker (all
cores to onnxruntime) and on 2 workers (cores split between them), in one run. Prints wall
time, throughput (input megapixels per second) and every worker's peak resident memory
(``ru_maxrss`` read in the worker process at the end), and checks that both outputs are equal.

    python benchmarks/zarr_scale.py --size 16384 --model models/nuclei2d.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.writer import write_multiscales_metadata
from zsdeconvnet.runtime.distributed import Job, open_executor, run_jobs
from zsdeconvnet.runtime.predict import PredictOptions
from zsdeconvnet.runtime.tasks import ModelSpec
from zsdeconvnet.training.sample_data import stardist_nuclei


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB; Linux reports ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_input(path: Path, size: int, chunk: int, seed: int = 0) -> None:
    """uint16 OME-Zarr: mirrored copies of the real image with fresh Poisson noise, row by row."""
    base = tifffile.imread(stardist_nuclei()).astype(np.float64)
    base = 20 + 400 * (base - base.min()) / np.ptp(base)  # ~20-420 photons
    n = base.shape[0]
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    arr = root.create_array("0", shape=(size, size), chunks=(chunk, chunk), dtype="uint16")
    rng = np.random.default_rng(seed)
    for y0 in range(0, size, n):
        row = np.concatenate(
            [base[:: 1 - 2 * ((y0 // n) % 2)][:, :: 1 - 2 * (k % 2)] for k in range(size // n)],
            axis=1,
        )
        arr[y0 : y0 + n] = (100 + rng.poisson(row)).astype(np.uint16)
    scale = [{"type": "scale", "scale": [0.065, 0.065]}]
    write_multiscales_metadata(
        root,
        datasets=[{"path": "0", "coordinateTransformations": scale}],
        fmt=FormatV05(),
        axes=[{"name": a, "type": "space", "unit": "micrometer"} for a in "yx"],
    )


def run(model: Path, src: Path, out: Path, workers: int, tile: int, block: int) -> dict:
    options = PredictOptions(tile=tile, progress=True)
    with open_executor(f"local:{workers}", None) as (executor, threads):
        start = time.perf_counter()
        done = run_jobs(
            [Job(src, out)], ModelSpec(str(model), "cpu", threads), options, executor, block=block
        )
        wall = time.perf_counter() - start
        rss = executor.client.run(peak_rss_mb)
    return {
        "workers": workers,
        "onnxruntime_threads_per_worker": threads,
        "tasks": len(done),
        "wall_s": round(wall, 1),
        "worker_peak_rss_mb": sorted(round(v) for v in rss.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--model", type=Path, default=Path("models/nuclei2d.onnx"))
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="zsd-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "input.zarr"
    start = time.perf_counter()
    make_input(src, args.size, 1024)
    print(f"input {args.size}x{args.size} uint16 written in {time.perf_counter() - start:.0f} s")
    results = []
    for workers in args.workers:
        out = work / f"out_{workers}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        result = run(args.model, src, out, workers, args.tile, args.block)
        result["input_mpix_per_s"] = round(args.size**2 / 1e6 / result["wall_s"], 3)
        results.append(result)
        print(json.dumps(result))
    if len(args.workers) > 1:
        first = zarr.open_array(str(work / f"out_{args.workers[0]}.zarr" / "0"))
        for workers in args.workers[1:]:
            other = zarr.open_array(str(work / f"out_{workers}.zarr" / "0"))
            equal = all(
                np.array_equal(first[y : y + 4096], other[y : y + 4096])
                for y in range(0, first.shape[0], 4096)
            )
            print(f"output of {workers} workers equals {args.workers[0]} worker(s): {equal}")
    print(f"client peak RSS {peak_rss_mb():.0f} MB; machine: {os.cpu_count()} cores")
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in [src]}
    print(f"input on disk {sizes['input.zarr'] / 1e6:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "runs": results}, indent=1))
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
