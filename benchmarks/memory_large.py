"""Peak memory of ``zsdeconvnet predict`` on a large image or stack, measured on the process.

Writes a float32 TIFF of ``--shape`` (a simulated noisy image tiled to size, written plane by
plane so this script stays small too), runs ``python -m zsdeconvnet predict MODEL`` on it in a
child process, and prints the child's wall time and two peaks: resident memory (``getrusage``;
it counts the pages of the memory-mapped input and output that are in memory, which the kernel
can drop at any time) and anonymous memory (``RssAnon`` sampled every 0.2 s: what the process
itself holds).

    python benchmarks/memory_large.py MODEL.onnx --shape 200 1024 1024 [--provider cuda] \
        [-- --tile 128 --tile-z 32]            # options after -- go to predict
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tifffile


def write_large(path: Path, shape: tuple[int, ...], seed: int = 0) -> None:
    """A float32 TIFF of ``shape`` (``YX`` or ``ZYX``), one plane at a time."""
    from zsdeconvnet.physics.simulate import SimulationConfig, simulate

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


def rss_anon_gb(pid: int) -> float:
    """The process's anonymous resident memory (GB), 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 0.0


def run_sampled(command: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``command``; return it and the peak of its ``RssAnon`` (GB)."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample():
        while child.poll() is None:
            peak[0] = max(peak[0], rss_anon_gb(child.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = child.communicate()
    sampler.join()
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr), peak[0]


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
        done, anon_gb = run_sampled(command)
        seconds = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"predict failed: {done.stderr.strip()[-500:]}")
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
        out_gb = (Path(tmp) / "out.tif").stat().st_size / 1e9
    print(
        f"input {'x'.join(map(str, args.shape))} float32 ({size_gb:.2f} GB), output "
        f"{out_gb:.2f} GB, provider {args.provider}, {' '.join(predict_args)}: peak RSS "
        f"{peak_gb:.2f} GB, peak anonymous {anon_gb:.2f} GB, wall {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
