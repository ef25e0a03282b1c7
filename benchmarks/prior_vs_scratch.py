"""Time to quality: the shipped 2D prior + fine-tuning against scratch, at equal wall time.

For each simulated case and each budget, trains as ``train --time-budget S`` does (step time
measured, iteration count fixed to fit; export not counted) from random weights (``scratch``,
the paper's method) and from the prior (``prior``), exports to ONNX, predicts with the runtime
and scores with the paper's protocol, beside raw and Richardson-Lucy at its oracle iteration
count (``quality.py``). Rows go to stdout and, one JSON object each, to ``--jsonl`` as they
finish, so a cut run keeps what it measured.

    python benchmarks/prior_vs_scratch.py --budgets 180 60 --jsonl results/x.jsonl

Cases are ``structure:photons`` or ``structure:photons:edge`` (camera pixel chosen so the
PSF's FWHM on the output grid is 5 % above the low end of the prior's range: a PSF at the edge
of what the prior was trained on). ``membranes`` is a class the prior never saw. Budget 0
exports the starting weights untrained: the prior as shipped, without fine-tuning.
``--iterations N`` trains a fixed iteration count instead (for example what a budget bought on
another CPU kind, so a faster CPU can stand in for a slower one's budget).
``--ensemble`` scores each trained model a second time with ``predict --ensemble`` (the mean
over the 8 orientations: eight times the inference, no more training).

With ``--jsonl`` the rows already in that file (same case, method and CPU) are not run
again, so the whole table (five cases x two starts x 60 + 180 + 600 s: about 2.5 h of training
alone) can be built over several sessions on the same machine kind; the rows of every session
stay in the file and the printed log says which were skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
from quality import CASES, CROP, baselines, score, simulate_psf, train_export
from train_prior import machine
from zsdeconvnet.physics.psf import check_psf, fwhm_px
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.training.config import parse_overrides, preset
from zsdeconvnet.training.prior_init import load_prior
from zsdeconvnet.training.trainer import Trainer, sr_psf

GENERALISATION = ["membranes:10", "mixed:10:edge"]


def edge_pixel_nm(sim: SimulationConfig) -> float:
    """Camera pixel (nm) that puts this optics' FWHM on the 2x grid at 1.05x the prior's low end."""
    _, card = load_prior()
    lo = card["fwhm_sr_px_range"][0]
    fwhm_nm = 0.51 * sim.wavelength_nm / sim.na  # Airy core FWHM
    return 2 * fwhm_nm / (1.05 * lo)


def make_case(case: str, seed: int) -> tuple[SimulationConfig, dict]:
    structure, photons, *rest = case.split(":")
    sim = SimulationConfig(structure=structure, photons=float(photons), size=256, seed=seed)
    if rest == ["edge"]:
        sim.pixel_nm = edge_pixel_nm(sim)
    return sim, simulate(sim)


def fine_tune(
    noisy,
    psf,
    pixel_nm,
    init: str,
    budget: float,
    overrides: dict,
    workdir: Path,
    ensemble=False,
    iterations: int | None = None,
):
    """Train with a time budget (or a fixed number of ``iterations``) from ``init``, export,
    predict; the output (and with ``ensemble`` the 8-orientation output) and run facts."""
    noisy = np.asarray(noisy, np.float32)
    schedule = dict(iterations=20000, time_budget_s=budget) if budget else dict(iterations=1)
    if iterations:
        schedule = dict(iterations=iterations)
    if init == "scratch":  # --set prior_file=... names the prior the prior rows start from
        overrides = {k: v for k, v in overrides.items() if k != "prior_file"}
    cfg = preset("fast", seed=1, init=init, checkpoint_every=10**9, **schedule, **overrides)
    trainer = Trainer(cfg, [noisy], psf, pixel_nm, workdir)
    trained = bool(budget or iterations)
    model, seconds = train_export(trainer, workdir, train=trained)
    _, out = Predictor(model, PredictOptions(progress=False)).predict_array(noisy)
    info = {"init": trainer.cfg.init, "iterations": trainer.cfg.iterations if trained else 0}
    if ensemble:
        options = PredictOptions(progress=False, ensemble=True)
        info["ensemble_output"] = Predictor(model, options).predict_array(noisy)[1]
    return {"output": out, **info, "train_seconds": round(seconds, 1)}


def recorded(jsonl: Path | None, cpu: str) -> set[tuple[str, str]]:
    """(case, method) of the rows already in ``jsonl`` that were measured on ``cpu`` (none
    when the file is not there yet)."""
    if jsonl is None or not jsonl.exists():
        return set()
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return {(r["case"], r["method"]) for r in rows if r.get("machine") == cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=CASES + GENERALISATION)
    parser.add_argument("--budgets", nargs="*", type=float, default=[60, 180, 600])
    parser.add_argument(
        "--iterations",
        nargs="*",
        type=int,
        default=[],
        help="also train these fixed iteration counts (what a budget bought on another CPU)",
    )
    parser.add_argument("--inits", nargs="*", default=["scratch", "prior"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="config override FIELD=VALUE")
    parser.add_argument("--jsonl", type=Path, default=None)
    parser.add_argument("--ensemble", action="store_true", help="also score predict --ensemble")
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    cpu = machine()
    print(f"# {cpu}; Python {platform.python_version()}; seed {args.seed}; crop {CROP}")
    print(f"{'case':16s} {'method':22s} {'PSNR':>6s} {'SSIM':>6s} {'FWHM nm':>8s}  notes")
    done = recorded(args.jsonl, cpu)
    out = args.jsonl.open("a") if args.jsonl else None

    def report(case, method, s, info):
        fwhm = f"{s['fwhm_nm']:8.1f}" if "fwhm_nm" in s else f"{'':8s}"
        print(
            f"{case:16s} {method:22s} {s['psnr']:6.2f} {s['ssim']:6.3f} {fwhm}  {info}", flush=True
        )
        if out:
            row = {"case": case, "method": method, **s, **info, "machine": cpu}
            out.write(json.dumps(row) + "\n")
            out.flush()

    for case in args.cases:
        sim, images = make_case(case, args.seed)
        beads = np.array(sim.bead_positions_sr) if sim.structure == "beads" else None
        psf = check_psf(simulate_psf(sim), (sim.pixel_nm, sim.pixel_nm), 2)
        if (case, "RL best") not in done:  # the last baseline row: both are there
            for method, s, info in baselines(images, sim, beads):
                width = fwhm_px(sr_psf(psf, sim.pixel_nm, preset("fast")).data)
                info = {
                    **info,
                    "pixel_nm": round(sim.pixel_nm, 1),
                    "psf_fwhm_sr_px": round(width, 2),
                }
                report(case, method, s, info)
        schedules = [(b, None, f"{b:g} s") for b in args.budgets]
        schedules += [(0, n, f"{n} it.") for n in args.iterations]
        for budget, iterations, label in schedules:
            for init in args.inits:
                if (case, f"{init} {label}") in done:
                    print(
                        f"{case:16s} {init + ' ' + label:22s} already in {args.jsonl}", flush=True
                    )
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    run = fine_tune(
                        images["noisy"],
                        psf,
                        sim.pixel_nm,
                        init,
                        budget,
                        overrides,
                        Path(tmp),
                        args.ensemble,
                        iterations,
                    )
                s = score(run.pop("output"), images["reference"], sim, beads)
                ensembled = run.pop("ensemble_output", None)
                report(case, f"{init} {label}", s, {"budget_s": budget, **run})
                if ensembled is not None:
                    s = score(ensembled, images["reference"], sim, beads)
                    method = f"{init} {label} +ens"
                    report(case, method, s, {"budget_s": budget, **run, "ensemble": True})


if __name__ == "__main__":
    main()
