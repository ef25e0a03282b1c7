"""Step times of a finished run, window by window, from its ``loss.csv`` (the ``seconds``
column): how the first steps and the later ones differ, which is what ``--time-budget``'s
measurements have to follow (``training/schedule.py: REMEASURE_AT``).

    python benchmarks/step_drift.py results/loss_time_budget_180_session15_bf16.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loss_csv", type=Path, nargs="+")
    parser.add_argument("--window", type=int, default=50, help="steps per row")
    args = parser.parse_args()
    for path in args.loss_csv:
        with path.open() as f:
            seconds = np.array([float(row["seconds"]) for row in csv.DictReader(f)])
        steps = np.diff(seconds)  # step i+1's time (checkpoints included where they fell)
        print(f"# {path.name}: {len(seconds)} iterations, {seconds[-1]:.1f} s")
        print(f"{'steps':>11s} {'median s':>9s} {'mean s':>7s}")
        print(f"{'2-6':>11s} {np.median(steps[:5]):9.3f} {steps[:5].mean():7.3f}")
        for a in range(6, len(steps), args.window):
            w = steps[a : a + args.window]
            print(f"{f'{a + 2}-{a + 1 + len(w)}':>11s} {np.median(w):9.3f} {w.mean():7.3f}")


if __name__ == "__main__":
    main()
