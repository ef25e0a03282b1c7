"""How far each stage of a 2D model reaches on its own (issue: effective halo).

The exported graph is cut in two with ``onnx.utils.extract_model``: stage 1 (``input`` ->
``denoised``) and stage 2 with the 2x tail (``denoised`` -> ``deconvolved``). For each context
``h`` (input px, a multiple of the size multiple, so tiles stay on the pooling grid), 128x128
tiles at three places are run with ``h`` px of context and their kept centre is compared with an
untiled pass of the same stage (stage 2 reads the untiled stage-1 output); the whole model, as
``predict`` runs it today, beside them. Printed: the largest |tiled - untiled| as a fraction of
the output's range, on the normalised image and on a noise image. A stage whose difference is
0 at ``h`` needs no more context than ``h``; tiling the stages one after the other would then
compute ``(tile + 2 h1)^2`` and ``(tile + 2 h2)^2`` pixels instead of ``(tile + 2 (h1 + h2))^2``
for both.

    python benchmarks/stage_reach.py --model models/nuclei2d.onnx
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tifffile
from onnx.utils import extract_model
from train_prior import machine
from zsdeconvnet.training.sample_data import stardist_nuclei

TILE = 128
PLACES = ((64, 64), (256, 320), (384, 128))  # tile corners in the 512x512 image


def sessions(model: Path, tmp: Path) -> tuple[ort.InferenceSession, ...]:
    """Stage 1, stage 2 and the whole model as onnxruntime sessions (one thread: the figures
    are differences, not times)."""
    extract_model(str(model), str(tmp / "s1.onnx"), ["input"], ["denoised"])
    extract_model(str(model), str(tmp / "s2.onnx"), ["denoised"], ["deconvolved"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    paths = (tmp / "s1.onnx", tmp / "s2.onnx", model)
    return tuple(ort.InferenceSession(str(p), options, providers=cpu) for p in paths)


def run(session: ort.InferenceSession, name: str, image: np.ndarray) -> np.ndarray:
    return session.run(None, {name: image[None, None]})[0][0, 0]


def reach(s1, s2, whole, image: np.ndarray, contexts: range) -> list[tuple[int, ...]]:
    """``(h, stage-1, stage-2, whole-model difference)`` for each context ``h``."""
    pad = max(contexts)
    big = np.pad(image, pad, mode="reflect")
    den = run(s1, "input", big)
    dec = run(s2, "denoised", den)
    ref3 = whole.run(None, {"input": big[None, None]})[1][0, 0]
    span1, span2, span3 = np.ptp(den), np.ptp(dec), np.ptp(ref3)
    rows = []
    for h in contexts:
        d1 = d2 = d3 = 0.0
        for y, x in PLACES:
            y, x = y + pad, x + pad
            box = (slice(y - h, y + TILE + h), slice(x - h, x + TILE + h))
            kept = (slice(h, h + TILE), slice(h, h + TILE))
            out1 = run(s1, "input", big[box])[kept]
            d1 = max(d1, np.abs(out1 - den[y : y + TILE, x : x + TILE]).max() / span1)
            fine = (slice(2 * h, 2 * (h + TILE)), slice(2 * h, 2 * (h + TILE)))
            out2 = run(s2, "denoised", den[box])[fine]
            ref2 = dec[2 * y : 2 * (y + TILE), 2 * x : 2 * (x + TILE)]
            d2 = max(d2, np.abs(out2 - ref2).max() / span2)
            out3 = whole.run(None, {"input": big[box][None, None]})[1][0, 0][fine]
            d3 = max(d3, np.abs(out3 - ref3[2 * y : 2 * (y + TILE), 2 * x : 2 * (x + TILE)]).max())
        rows.append((h, float(d1), float(d2), float(d3 / span3)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/nuclei2d.onnx"))
    parser.add_argument("--step", type=int, default=8, help="context step (the size multiple)")
    parser.add_argument("--max", type=int, default=120)
    args = parser.parse_args()
    raw = tifffile.imread(stardist_nuclei()).astype(np.float32)[:512, :512]
    lo, hi = np.percentile(raw, [0, 99.9])
    images = {
        "stardist img2d": ((raw - lo) / (hi - lo)).astype(np.float32),
        "noise": np.random.default_rng(0).normal(0.3, 0.1, raw.shape).astype(np.float32),
    }
    print(f"# {machine()}; model {args.model}; {TILE}x{TILE} tiles at {len(PLACES)} places")
    print(f"{'image':16s} {'context px':>10s} {'stage 1':>9s} {'stage 2':>9s} {'whole':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        s1, s2, whole = sessions(args.model, Path(tmp))
        contexts = range(args.step, args.max + 1, args.step)
        for name, image in images.items():
            for h, d1, d2, d3 in reach(s1, s2, whole, image, contexts):
                print(f"{name:16s} {h:10d} {d1:9.2e} {d2:9.2e} {d3:9.2e}", flush=True)


if __name__ == "__main__":
    main()
