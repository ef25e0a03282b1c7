"""How much context a 3D model's tiles need in practice: tiled output against an untiled pass.

The halo written into a model is its receptive-field radius, counted from the architecture; it
makes tiled prediction exact but costs a lot in 3D (the fast 3D network reaches 36 planes and 59
px: a 32-plane, 128 px tile is computed as 104 x 246 x 246 voxels). A voxel's output depends
much less on far context than the bound allows, so this script runs the model with smaller
``overlap`` (y, x) and ``overlap_z`` and reports, for each, the largest and the RMS difference
to the untiled output (as a fraction of the untiled output's 0.1-99.9 percentile range), with
the voxels computed per output voxel (redundancy) and the time.

    python benchmarks/overlap3d.py MODEL.onnx STACK.tif [--tile 64 --tile-z 16] \
        [--overlaps 0:0 8:4 16:8 24:12]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from zsdeconvnet.runtime.io import read_input
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor


def redundancy(predictor: Predictor, shape: tuple[int, ...]) -> float:
    """Voxels the network computes per input voxel kept, for the tile plan of ``shape``."""
    plan = predictor.plan(shape)
    computed = len(plan.tiles) * int(np.prod(plan.tile_shape))
    return computed / int(np.prod(shape))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("stack", type=Path, help="a ZYX TIFF")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--tile-z", type=int, default=16)
    parser.add_argument(
        "--overlaps", nargs="+", default=["0:0", "8:4", "16:8", "24:12"], help="XY:Z pairs"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    model = Model(args.model, provider="cpu")
    volume = read_input(args.stack).data.squeeze().astype(np.float32)
    start = time.perf_counter()
    whole = PredictOptions(tile=None, tile_z=volume.shape[0], progress=False)  # one tile
    _, untiled = Predictor(model, whole).predict_array(volume)
    seconds = time.perf_counter() - start
    lo, hi = np.percentile(untiled, [0.1, 99.9])
    print(f"stack {volume.shape}, halo {model.metadata.halo}, untiled {seconds:.1f} s")
    print(f"{'overlap xy:z':>12s} {'max diff':>9s} {'rms diff':>9s} {'redund.':>8s} {'s':>6s}")
    records = []
    for item in args.overlaps + ["exact"]:
        if item == "exact":
            xy, z = None, None
        else:
            xy, z = (int(v) for v in item.split(":"))
        options = PredictOptions(
            tile=args.tile, tile_z=args.tile_z, overlap=xy, overlap_z=z, progress=False
        )
        predictor = Predictor(model, options)
        start = time.perf_counter()
        _, tiled = predictor.predict_array(volume)
        seconds = time.perf_counter() - start
        diff = np.abs(tiled - untiled) / (hi - lo)
        record = {
            "overlap": item,
            "halo": list(predictor.halo),
            "max_diff": float(diff.max()),
            "rms_diff": float(np.sqrt(np.mean(diff**2))),
            "redundancy": round(redundancy(predictor, volume.shape), 2),
            "seconds": round(seconds, 1),
        }
        records.append(record)
        print(
            f"{item:>12s} {record['max_diff']:9.2e} {record['rms_diff']:9.2e} "
            f"{record['redundancy']:8.2f} {seconds:6.1f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
