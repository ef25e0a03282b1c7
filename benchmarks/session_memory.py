"""Peak memory and time of one tile through onnxruntime, for the CPU memory options.

Each choice (memory arena on/off, memory pattern on/off) runs in a fresh child process, which
loads the model, runs one random tile once to warm up and once timed, and reports its peak
resident memory (``getrusage``). The runtime uses arena on, pattern off.

    python benchmarks/session_memory.py MODEL.onnx --shape 1 1 64 240 240
    python benchmarks/session_memory.py models/nuclei2d.onnx --shape 1 1 768 768
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys, time
import numpy as np, onnxruntime as ort
path, shape = sys.argv[1], json.loads(sys.argv[2])
arena, pattern = sys.argv[3] == "1", sys.argv[4] == "1"
options = ort.SessionOptions()
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.enable_cpu_mem_arena = arena
options.enable_mem_pattern = pattern
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
feed = {session.get_inputs()[0].name: np.random.default_rng(0).random(shape, dtype=np.float32)}
session.run(None, feed)
start = time.perf_counter()
session.run(None, feed)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
print(json.dumps({"seconds": seconds, "peak_gb": peak}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--shape", type=int, nargs="+", required=True, help="the tile, NCYX/NCZYX")
    args = parser.parse_args()
    print(f"model {args.model.name}, tile {'x'.join(map(str, args.shape))}")
    print(f"{'choice':34s} {'peak GB':>8s} {'s / tile':>9s}")
    for arena in (True, False):
        for pattern in (True, False):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.model), json.dumps(args.shape)]
                + [str(int(arena)), str(int(pattern))],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            label = f"arena {'on' if arena else 'off'}, memory pattern {'on' if pattern else 'off'}"
            print(f"{label:34s} {result['peak_gb']:8.2f} {result['seconds']:9.2f}", flush=True)


if __name__ == "__main__":
    main()
