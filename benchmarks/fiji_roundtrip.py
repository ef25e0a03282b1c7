"""Round trip of one ImageJ macro call: a new process per call (exec) vs the warm server.

Runs Debian's ImageJ 1.x under xvfb with the installed macro commands, calls
"ZS-DeconvNet Predict" --repeat times on a 512x512 image through each route (open=no), and
prints the median milliseconds per call measured inside the macro (getTime()). With
``--model`` the shipped model runs; the default tiny network makes the call overhead visible.

    python benchmarks/fiji_roundtrip.py [--model models/nuclei2d.onnx] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from zsdeconvnet.fiji_bridge.install import install_macros
from zsdeconvnet.fiji_bridge.server import PredictionServer
from zsdeconvnet.runtime.io import write_tiff

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            model = args.model.resolve()
        else:
            from tiny_models import build_tiny

            model = build_tiny(tmp / "tiny.onnx")
        image = tmp / "in.tif"
        rng = np.random.default_rng(0)
        write_tiff(
            image,
            (100 + 50 * rng.random((512, 512))).astype(np.float32),
            "YX",
            {"X": 65.0, "Y": 65.0},
        )
        server = PredictionServer(0, [str(tmp), str(model.parent)], token="t", provider="cpu")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        info = tmp / "server.json"
        info.write_text(json.dumps({"port": server.server_address[1], "token": "t"}))
        install_macros(tmp, python=sys.executable, server_info=info)
        calls = []
        for route in ("exec", "server"):
            for k in range(args.repeat + 1):
                calls.append(
                    f't0 = getTime(); run("ZS-DeconvNet Predict", "model=[{model}] '
                    f'input=[{image}] output=[{tmp}/o_{route}{k}.tif] route={route} open=no"); '
                    f'print("TIME {route} {k} " + (getTime() - t0));'
                )
        macro = tmp / "bench.ijm"
        macro.write_text("\n".join(calls))
        done = subprocess.run(
            [
                "xvfb-run",
                "-a",
                "java",
                f"-Dplugins.dir={tmp}",
                "-jar",
                "/usr/share/java/ij.jar",
                "-batch",
                str(macro),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        server.shutdown()
    times: dict[str, list[float]] = {"exec": [], "server": []}
    for line in done.stdout.splitlines():
        if line.startswith("TIME "):
            _, route, k, ms = line.split()
            if int(k) > 0:  # the first call of each route warms up
                times[route].append(float(ms))
    if not all(times.values()):
        raise SystemExit(f"no timings: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    exec_ms, server_ms = (statistics.median(times[r]) for r in ("exec", "server"))
    print(f"model: {model.name}; 512x512 image; median of {args.repeat} calls per route")
    print(f"exec (new process per call): {exec_ms:7.0f} ms")
    print(f"warm server                : {server_ms:7.0f} ms")
    print(f"server is {exec_ms / server_ms:.2f}x faster per call")


if __name__ == "__main__":
    main()
