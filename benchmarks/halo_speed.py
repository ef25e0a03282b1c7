"""Tiled prediction with the exact halo, the effective halo in one pass, and stage by stage:
time, peak memory, difference.

For a 2D model on a 1024x1024 frame (the model's training image tiled to size, or any TIFF)
and, with ``--model3d``, a 3D model on a stack, runs each (tile, overlap) configuration in its
own child process (so each peak is its own): one warm-up pass, then ``--repeats`` timed passes
of ``Predictor.predict_array``. Overlaps: ``exact`` (the counted halo, one pass), ``one-pass``
(the effective halo, both stages in each tile: the default before stage-by-stage restoration)
and ``effective`` (the default: stage by stage where the model records ``stage_halo``,
``runtime.staged``). Prints seconds per frame (min and median), the child's peak resident
memory, and the largest difference from one untiled pass with the exact halo, as a fraction of
that pass's output range (the contract of ``runtime.reach``: 1e-5).

    python benchmarks/halo_speed.py --model models/nuclei2d.onnx --image IMG.tif \
        [--model3d M3.onnx --stack STACK.tif] [--tiles 256 512 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from train_prior import machine

#: The configurations compared at each tile size (see the module docstring)
OVERLAPS = ("exact", "one-pass", "effective")


def worker(args) -> None:
    """One configuration, in this process: time it, report the peak and the difference."""
    from zsdeconvnet.runtime.model import Model
    from zsdeconvnet.runtime.predict import PredictOptions, Predictor
    from zsdeconvnet.runtime.reach import differences

    image = np.load(args.array)
    model = Model(args.model, provider="cpu")
    tile_z = args.tile_z if args.tile_z else None
    overlap = overlap_z = args.overlap
    if args.overlap == "one-pass":  # the effective halo as a number: never stage by stage
        halo = (model.metadata.effective_halo or {"halo": model.metadata.halo})["halo"]
        overlap, overlap_z = halo[-1], halo[0]
    options = PredictOptions(
        tile=args.tile or None,
        tile_z=tile_z,
        overlap=overlap,
        overlap_z=overlap_z if model.metadata.ndim == 3 else None,
        progress=False,
    )
    predictor = Predictor(model, options)
    outputs = predictor.predict_array(image)  # warm-up (and the output compared)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        predictor.predict_array(image)
        times.append(time.perf_counter() - start)
    plan = predictor.plan(image.shape)
    staged = getattr(getattr(predictor, "_array_restorer", None), "_staged", None)
    if staged is not None:  # stage 1's tiles + stage 2's
        first, second = staged.plan.first, staged.plan.second
        tiles = f"{len(first)}+{len(second)}"
        shape = "/".join("x".join(map(str, p.tile_shape)) for p in (first, second))
        halo = "x".join(map(str, predictor.stage_reach)) + "/stage"
    else:
        tiles, shape = str(len(plan.tiles)), "x".join(map(str, plan.tile_shape))
        halo = "x".join(map(str, predictor.halo))
    result = {
        "halo": halo,
        "tiles": tiles,
        "tile_shape": shape,
        "min_s": round(min(times), 3) if times else None,
        "median_s": round(float(np.median(times)), 3) if times else None,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    if args.reference:
        reference = np.load(args.reference + ".den.npy"), np.load(args.reference + ".dec.npy")
        result["max_difference"] = float(f"{max(differences(outputs, reference).values()):.3g}")
    else:
        np.save(args.save + ".den.npy", outputs[0])
        np.save(args.save + ".dec.npy", outputs[1])
    print(json.dumps(result))


def child(model: Path, array: Path, tile: int, overlap: str, repeats: int, **kw) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--model", str(model), "--array", str(array)]
    cmd += ["--tile", str(tile), "--overlap", overlap, "--repeats", str(repeats)]
    for key, value in kw.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def frame_2d(path: Path | None, size: int) -> np.ndarray:
    """The 2D test frame: ``path`` (or stardist's nuclei image), mirrored-tiled to ``size``."""
    if path is None:
        from zsdeconvnet.training.sample_data import stardist_nuclei

        path = stardist_nuclei()
    image = np.asarray(tifffile.imread(path), np.float32)
    reps = (-(-size // image.shape[0]), -(-size // image.shape[1]))
    return np.tile(image, reps)[:size, :size]


def run_case(label, model, image, configs, repeats, tmp: Path, reference_kw: dict) -> None:
    array = tmp / f"{label}.npy"
    np.save(array, image)
    ref = tmp / f"{label}_ref"
    child(model, array, 0, "exact", 0, save=ref, **reference_kw)
    print(f"\n## {label}: {model.name}, input {'x'.join(map(str, image.shape))}")
    print(
        f"{'tile':>10s} {'overlap':>9s} {'halo':>14s} {'tiles':>5s} {'computed':>21s} "
        f"{'s/frame min':>11s} {'median':>7s} {'peak GB':>7s} {'max diff':>9s}"
    )
    rows = {}
    for tile, tile_z in configs:
        for overlap in OVERLAPS:
            r = child(model, array, tile, overlap, repeats, tile_z=tile_z, reference=ref)
            rows[overlap] = r
            name = f"{tile}" + (f"/z{tile_z}" if tile_z else "")
            print(
                f"{name:>10s} {overlap:>9s} {r['halo']:>14s} "
                f"{r['tiles']:>5s} {r['tile_shape']:>21s} {r['min_s']:11.3f} "
                f"{r['median_s']:7.3f} {r['peak_rss_gb']:7.2f} {r['max_difference']:9.2g}",
                flush=True,
            )
        speed = {o: rows["exact"]["median_s"] / rows[o]["median_s"] for o in OVERLAPS[1:]}
        ratios = ", ".join(f"{o} {v:.2f}x" for o, v in speed.items())
        print(f"{'':>10s} speed-up vs exact: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--array", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    parser.add_argument("--overlap", default="effective", help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--tile-z", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=Path("models/nuclei2d.onnx"))
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--model3d", type=Path, default=None)
    parser.add_argument("--stack", type=Path, default=None)
    parser.add_argument(
        "--tiles3d",
        nargs="+",
        default=["64:16", "128:24", "512:0"],
        help="y-x tile : z tile (0: the runtime's automatic z tiles)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats3d", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"# {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = frame_2d(args.image, args.size)
        configs = [(t, None) for t in args.tiles]
        run_case("2D", args.model, image, configs, args.repeats, tmp, {})
        if args.model3d:
            stack = np.asarray(tifffile.imread(args.stack), np.float32)
            configs = [tuple(int(v) for v in c.split(":")) for c in args.tiles3d]
            # the untiled reference: one tile of the whole depth (a z tile disables the budget)
            run_case(
                "3D", args.model3d, stack, configs, args.repeats3d, tmp, {"tile_z": stack.shape[0]}
            )


if __name__ == "__main__":
    main()
