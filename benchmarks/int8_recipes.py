"""int8 recipes on this CPU: which static quantisation reproduces fp32, and at what speed.

onnxruntime's x86 int8 kernels differ by CPU: with VNNI (AVX512-VNNI or AVX-VNNI) u8 x s8
products accumulate in 32 bits; without it (AVX2 only, AVX-512 without VNNI) the u8 x s8 path
(``vpmaddubsw``) adds pairs of products into 16 bits and can saturate. This script quantises one
fp32 model with several recipes, calibrated on tiles of one image as ``export --quantize int8``
does, and reports for each recipe the PSNR of both outputs against fp32 on the whole image
(through the runtime: normalise, tile, stitch) and the runtime's time per frame, fp32 beside it,
all in one run. Prints the CPU's flags that decide which kernel onnxruntime takes.

    python benchmarks/int8_recipes.py [--model models/nuclei2d.onnx] [--image IMG.tif]
        [--checkpoint RUN_DIR] [--size 1024] [--repeat 5]

``--checkpoint`` exports a training run folder first (for example a few-iteration model,
whose near-flat outputs are the hardest case for the gate).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from zsdeconvnet.export.quantize import INT8_RECIPE, INT8_RECIPES, output_psnr, quantize_model
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor

#: CPU flags that decide onnxruntime's int8 kernels on x86 (from /proc/cpuinfo)
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_flags() -> str:
    """The model name and the int8-relevant flags this CPU has."""
    name, flags = platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = [f for f in FLAGS if f in flags] or sorted(flags)[:8]
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(have)}"


def timed(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def calibration_tiles(
    image: np.ndarray, percentiles: tuple[float, float], size: int = 256, count: int = 8
) -> list[np.ndarray]:
    """Random tiles normalised as the runtime normalises the whole image (model percentiles)."""
    rng = np.random.default_rng(0)
    lo, hi = np.percentile(image, percentiles)
    size = min(size, *image.shape) // 16 * 16
    tiles = []
    for _ in range(count):
        y = int(rng.integers(0, image.shape[0] - size + 1))
        x = int(rng.integers(0, image.shape[1] - size + 1))
        tile = (image[y : y + size, x : x + size] - lo) / max(hi - lo, 1e-12)
        tiles.append(tile.astype(np.float32)[None, None])
    return tiles


def default_image() -> Path:
    from zsdeconvnet.training.sample_data import stardist_nuclei

    return Path(stardist_nuclei())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=Path(__file__).parents[1] / "models/nuclei2d.onnx"
    )
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--size", type=int, default=1024, help="timed frame size (tiled image)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    image = np.asarray(tifffile.imread(args.image or default_image()), np.float32)
    reps = -(-args.size // min(image.shape))
    frame = np.tile(image, (reps, reps))[: args.size, : args.size].copy()
    print(f"machine: {cpu_flags()}")
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}; image {image.shape}, frame {frame.shape}")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.checkpoint:
            from zsdeconvnet.export.checkpoint import export_checkpoint

            model = Path(tmp) / "fp32.onnx"
            export_checkpoint(args.checkpoint, model)
        print(f"model: {args.checkpoint or args.model}")
        options = PredictOptions(tile=None, progress=False)
        fp32 = Predictor(Model(model, provider="cpu"), options)
        norm = fp32.model.metadata.normalization
        tiles = calibration_tiles(image, (norm.low, norm.high))
        ref = fp32.predict_array(image)
        t32 = timed(lambda: fp32.predict_array(frame), args.repeat)
        print(
            f"{'recipe':<28} {'calib dB':>9} {'denoised dB':>12} {'deconv. dB':>11} "
            f"{'s/frame':>8} {'vs fp32':>8}"
        )
        print(f"{'fp32':<28} {'':>9} {'':>12} {'':>11} {t32[0]:8.3f} {1.0:8.2f}")
        for name in INT8_RECIPES:
            path = Path(tmp) / f"{name}.onnx"
            calib = quantize_model(model, path, tiles, min_psnr=-100.0, recipe=name)
            pred = Predictor(Model(path, provider="cpu", self_check=False), options)
            out = pred.predict_array(image)
            psnr = [output_psnr(a, b) for a, b in zip(ref, out)]
            t8 = timed(lambda pred=pred: pred.predict_array(frame), args.repeat)
            print(
                f"{name:<28} {min(calib.values()):9.1f} {psnr[0]:12.1f} {psnr[1]:11.1f} "
                f"{t8[0]:8.3f} {t32[0] / t8[0]:8.2f}x"
            )
        # what the runtime's self-check costs when it loads the default recipe's model
        path = Path(tmp) / f"{INT8_RECIPE}.onnx"
        load = {
            flag: timed(lambda f=flag: Model(path, provider="cpu", self_check=f), args.repeat)
            for flag in (False, True)
        }
        print(
            f"load of the {INT8_RECIPE} model: {load[False][0]:.3f} s without the self-check, "
            f"{load[True][0]:.3f} s with it (+{load[True][0] - load[False][0]:.3f} s, median)"
        )


if __name__ == "__main__":
    main()
