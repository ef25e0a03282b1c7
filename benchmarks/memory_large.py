"""Peak memory of ``zsdeconvnet predict`` on a large image or stack, measured on the process.

Writes a float32 TIFF of ``--shape`` (a simulated noisy image tiled to size, written plane by
plane so this script stays small too), runs ``python -m zsdeconvnet predict MODEL`` on it in a
child process, and prints the child's peak resident memory (``getrusage``) and wall time.

    python benchmarks/memory_large.py MODEL.onnx --shape 200 1024 1024 [--provider cuda] \
        [-- --tile 128 --tile-z 32]            # options after -- go to predict
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile


def write_large(path: Path, shape: tuple[int, ...], seed: int = 0) -> None:
    """A float32 TIFF of ``shape`` (``YX`` or ``ZYX``), one plane at a time."""
    from zsdeconvnet.training.simulate import SimulationConfig, simulate

    plane = simulate(SimulationConfig(structure="mixed", photons=10, size=256, seed=seed))
    base = plane["noisy"].astype(np.float32)
    reps = (-(-shape[-2] // 256), -(-shape[-1] // 256))
    tiled = np.tile(base, reps)[: shape[-2], : shape[-1]]
    planes = shape[0] if len(shape) == 3 else 1

    def pages():
        for z in range(planes):
            yield np.roll(tiled, 3 * z, axis=1)

    tifffile.imwrite(
        path,
        pages(),
        shape=shape,
        dtype=np.float32,
        imagej=True,
        metadata={"axes": "ZYX" if len(shape) == 3 else "YX"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--shape", type=int, nargs="+", default=[200, 1024, 1024])
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args, predict_args = parser.parse_known_args()  # the rest goes to predict
    predict_args = [a for a in predict_args if a != "--"]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        image = Path(tmp) / "large.tif"
        write_large(image, tuple(args.shape))
        size_gb = image.stat().st_size / 1e9
        command = [sys.executable, "-m", "zsdeconvnet", "predict", str(args.model), str(image)]
        command += ["-o", str(Path(tmp) / "out.tif"), "--provider", args.provider, "--quiet"]
        command += predict_args
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"predict failed: {done.stderr.strip()[-500:]}")
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
        out_gb = (Path(tmp) / "out.tif").stat().st_size / 1e9
    print(
        f"input {'x'.join(map(str, args.shape))} float32 ({size_gb:.2f} GB), output "
        f"{out_gb:.2f} GB, provider {args.provider}: peak RSS {peak_gb:.2f} GB, "
        f"wall {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
