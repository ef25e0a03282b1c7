"""Picture of the priors issue's time-to-quality table: PSNR against the training budget.

Reads the rows ``prior_vs_scratch.py --jsonl`` wrote (one CPU kind per file) and draws, per
simulator case, scratch and the prior + fine-tuning at each wall-clock budget, with the raw
image and Richardson-Lucy at its oracle iteration count as horizontal lines and the issue's
target for 180 s where it has one (mixed structures at 5 photons: 27.0 dB; 25 photons: RL +
1.0 dB). Bead panels also give the FWHM beside each point.

    python benchmarks/plot_time_to_quality.py results/prior_vs_scratch_table_bf16.jsonl \
        --png ../docs/images/time_to_quality_bf16.png --title "2-core AMD EPYC, AVX512-BF16"
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

#: The issue's PSNR targets at 180 s: an absolute level (dB) or a margin over RL's (dB)
TARGETS = {
    "mixed:5": ("level", 27.0),
    "mixed:25": ("over RL", 1.0),
    "filaments:25": ("over RL", 1.0),
}
BUDGET = re.compile(r"^(scratch|prior) (\d+(?:\.\d+)?) s$")


def load(path: Path) -> dict[str, list[dict]]:
    """Rows per case, in file order (a later row of the same case and method wins)."""
    cases: dict[str, dict[str, dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            cases.setdefault(row["case"], {})[row["method"]] = row
    return {case: list(rows.values()) for case, rows in cases.items()}


def draw(cases: dict[str, list[dict]], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cases), figsize=(3.4 * len(cases), 3.6), squeeze=False)
    for ax, (case, rows) in zip(axes[0], cases.items()):
        by = {r["method"]: r for r in rows}
        for init, colour in (("scratch", "tab:grey"), ("prior", "tab:blue")):
            points = sorted(
                (float(m.group(2)), r)
                for r in rows
                if (m := BUDGET.match(r["method"])) and m.group(1) == init
            )
            if not points:
                continue
            xs = [b for b, _ in points]
            ax.plot(xs, [r["psnr"] for _, r in points], "o-", color=colour, label=init)
            for b, r in points:
                if r.get("fwhm_nm"):
                    ax.annotate(
                        f"{r['fwhm_nm']:.0f} nm",
                        (b, r["psnr"]),
                        fontsize=7,
                        textcoords="offset points",
                        xytext=(3, -10),
                        color=colour,
                    )
        for method, style, label in (
            ("raw (upsampled)", ":", "raw"),
            ("RL best", "--", "RL oracle"),
        ):
            if method in by:
                ax.axhline(by[method]["psnr"], color="k", ls=style, lw=1, label=label)
        if case in TARGETS:
            kind, value = TARGETS[case]
            level = (
                value
                if kind == "level"
                else by.get("RL best", {}).get("psnr", float("nan")) + value
            )
            ax.plot(
                [180],
                [level],
                marker="*",
                ms=12,
                color="tab:red",
                ls="none",
                label="target (180 s, CPU without bf16)",
            )
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([60, 180, 600])
        ax.set_xticklabels(["60", "180", "600"])
        ax.set_xlabel("training budget (s)")
        ax.set_title(case.replace(":", ", ") + " photons", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR (dB) against the simulator's reference")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", type=Path)
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--title", default="")
    parser.add_argument("--cases", nargs="*", default=None, help="cases to draw (default: all)")
    args = parser.parse_args()
    cases = load(args.jsonl)
    if args.cases:
        cases = {c: cases[c] for c in args.cases if c in cases}
    draw(cases, args.png, args.title)
    print(f"wrote {args.png} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
