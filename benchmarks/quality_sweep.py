"""Run quality.py (or quality3d.py) over training variants and cases in parallel processes.

Each (variant, case) pair is one process of the quality script, so a GPU with many CPU cores
trains many small networks at once; the results are gathered into one JSON file and a table.

    python benchmarks/quality_sweep.py --device cuda --workers 12 \\
        --variant base: --variant hw005:hessian_weight=0.005 \\
        --cases filaments:25 mixed:25 beads:10 -o sweep.json

A variant is ``NAME:FIELD=VALUE,FIELD=VALUE`` (training config overrides; empty = preset).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_one(script: str, variant: str, case: str, args, folder: Path) -> list[dict]:
    name, _, sets = variant.partition(":")
    out = folder / f"{name}_{case.replace(':', '_')}.json"
    command = [sys.executable, str(HERE / script), "--cases", case, "--device", args.device]
    command += ["--preset", args.preset, "--json", str(out), "--seed", str(args.seed)]
    for item in filter(None, sets.split(",")):
        command += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        print(f"FAILED {name} {case}: {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return []
    rows = json.loads(out.read_text())
    for row in rows:
        row.update(variant=name, overrides=sets, wall_s=round(time.perf_counter() - start, 1))
    print(f"done {name} {case} in {time.perf_counter() - start:.0f} s", flush=True)
    for row in rows:  # in the log as soon as known: a sweep stopped early keeps them
        print(f"row {json.dumps(row)}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME:FIELD=VALUE,...")
    parser.add_argument("--cases", nargs="+", required=True)
    parser.add_argument("--mode", choices=["2d", "3d"], default="2d")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    script = "quality.py" if args.mode == "2d" else "quality3d.py"
    jobs = [(v, c) for v in (args.variant or ["base:"]) for c in args.cases]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_one, script, v, c, args, Path(tmp)) for v, c in jobs]
        rows = [row for f in futures for row in f.result()]
    args.output.write_text(json.dumps(rows, indent=1))
    for row in rows:
        fwhm = row.get("fwhm_nm", row.get("fwhm_lateral_nm"))
        extra = f" FWHM {fwhm:.1f}" if fwhm is not None else ""
        if "fwhm_axial_nm" in row:
            extra += f" / z {row['fwhm_axial_nm']:.1f}"
        print(
            f"{row['variant']:10s} {row['case']:13s} {row['method']:16s} "
            f"{row['psnr']:6.2f} {row['ssim']:6.3f}{extra}"
        )


if __name__ == "__main__":
    main()
