"""Memory and time of a model's two stages run one after the other, with one onnxruntime arena
per session or one arena shared by both (``runtime/model.py: shared_cpu_arena``).

Each configuration runs in its own process (so each peak is its own): stage 1 on one
``--first`` px tile, then stage 2 on four ``--second`` px tiles (a 1024x1024 frame at tile 512,
``runtime/staged.py``), five times; prints the fastest pass and the process's peak resident
memory. Also each stage alone at ``--second`` px, for their memory per pixel.

    python benchmarks/stage_memory.py --model models/nuclei2d.onnx
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from train_prior import machine


def worker(model: Path, mode: str, first: int, second: int) -> str:
    from zsdeconvnet.runtime.stages import split_stages

    if mode == "shared":
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
    sessions = []
    for data in split_stages(model.read_bytes()):
        options = ort.SessionOptions()
        options.enable_mem_pattern = False
        options.log_severity_level = 3
        if mode == "shared":
            options.add_session_config_entry("session.use_env_allocators", "1")
        sessions.append(ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]))
    s1, s2 = sessions
    a = np.random.default_rng(0).random((1, 1, first, first), dtype=np.float32)
    b = np.random.default_rng(1).random((1, 1, second, second), dtype=np.float32)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        if mode in ("separate", "shared"):
            s1.run(None, {"input": a})
            for _ in range(4):
                s2.run(None, {"denoised": b})
        elif mode == "stage1":
            s1.run(None, {"input": b})
        else:
            s2.run(None, {"denoised": b})
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return f"{mode:9s} fastest {min(times):.3f} s  peak {peak:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/nuclei2d.onnx"))
    parser.add_argument("--first", type=int, default=1224, help="stage-1 tile (px)")
    parser.add_argument("--second", type=int, default=616, help="stage-2 tile (px)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(worker(args.model, args.worker, args.first, args.second))
        return
    print(f"# {machine()}; {args.model}; stage 1 {args.first}^2, stage 2 4 x {args.second}^2")
    for mode in ("separate", "shared", "stage1", "stage2"):
        cmd = [sys.executable, __file__, "--model", str(args.model), "--worker", mode]
        cmd += ["--first", str(args.first), "--second", str(args.second)]
        print(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip())


if __name__ == "__main__":
    main()
