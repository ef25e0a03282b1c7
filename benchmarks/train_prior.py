"""Train the shipped 2D prior (the script that reproduces ``training/priors/prior2d_fast.pt``).

    python benchmarks/train_prior.py --iterations 2400 --run /tmp/prior_run \
        --out training/priors/prior2d_fast.pt

The fast preset's network and loss, trained zero-shot on simulated acquisitions drawn from
:class:`zsdeconvnet.training.prior_data.PriorDistribution` (no ground truth). Resumes from
``--run`` when a checkpoint is there; ``--start PRIOR`` continues an earlier prior (its card is
kept in the new one as ``started_from``). Writes the weights file and a Markdown model card
beside it. The shipped prior is five runs:

    python benchmarks/train_prior.py --iterations 2000 --run /tmp/p1 --out /tmp/p1.pt \
        --structures filaments puncta mixed beads nuclei
    python benchmarks/train_prior.py --iterations 600 --lr 1e-4 --run /tmp/p2 \
        --start /tmp/p1.pt --out /tmp/p2.pt
    python benchmarks/train_prior.py --iterations 2400 --lr 1e-4 --seed 3 --run /tmp/p3 \
        --start /tmp/p2.pt --out /tmp/p3.pt
    python benchmarks/train_prior.py --iterations 1793 --lr 1e-4 --seed 4 --run /tmp/p4 \
        --start /tmp/p3.pt --out /tmp/p4.pt \
        --structures filaments puncta mixed beads nuclei empty empty
    python benchmarks/train_prior.py --iterations 14285 --lr 1e-4 --seed 5 --run /tmp/p5 \
        --start /tmp/p4.pt --out training/priors/prior2d_fast.pt \
        --structures filaments puncta mixed beads nuclei empty empty empty

``--time-budget S`` fixes the iteration count from the measured step time instead (with
``--device cuda`` and ``--batch-size``: ``benchmarks/gpu_session.sh prior`` on a lent GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from zsdeconvnet.training.config import preset
from zsdeconvnet.training.prior import PriorTrainer, write_prior
from zsdeconvnet.training.prior_data import PriorDistribution
from zsdeconvnet.training.prior_init import load_prior


def machine() -> str:
    """CPU model and the flags that decide training speed."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "Model name" in ln), "?"
    )
    flags = text.split("Flags:")[-1].split()
    keep = [f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma", "avx_vnni")]
    cores = len(__import__("os").sched_getaffinity(0))
    return f"{name}, {cores} cores, flags {' '.join(sorted(set(keep)))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's (4)")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds of training: the step time is measured and --iterations becomes the cap",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--start", type=Path, default=None, help="continue this prior file")
    parser.add_argument(
        "--structures",
        nargs="+",
        default=None,
        help="structure classes (default: PriorDistribution's)",
    )
    args = parser.parse_args()
    overrides = {"lr": args.lr} if args.lr else {}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.time_budget:
        overrides["time_budget_s"] = args.time_budget
    cfg = preset(
        "fast",
        iterations=args.iterations,
        seed=args.seed,
        checkpoint_every=200,
        init="scratch",
        device=args.device,
        **overrides,
    )
    dist = PriorDistribution()
    if args.structures:
        dist = replace(dist, structures=tuple(args.structures))
    trainer = PriorTrainer(cfg, args.run, dist)
    parent = None
    if args.start:
        weights, parent = load_prior(args.start)
        trainer.model.load_state_dict(weights)
    if (args.run / "checkpoint.pt").exists():
        trainer.load_checkpoint(args.run)
    start = time.perf_counter() - trainer.elapsed
    trainer.train(progress=True)
    seconds = time.perf_counter() - start
    info = write_prior(trainer, args.out, seconds, machine(), parent)
    card_md = args.out.with_suffix(".md")
    card_md.write_text(
        "# zsdeconvnet 2D prior: model card\n\n```json\n" + json.dumps(info, indent=1) + "\n```\n"
    )
    print(
        json.dumps(
            {
                k: info[k]
                for k in (
                    "iterations",
                    "total_iterations",
                    "training_seconds",
                    "hardware",
                    "fwhm_sr_px_range",
                    "structure_counts",
                )
            }
        )
    )


if __name__ == "__main__":
    main()
