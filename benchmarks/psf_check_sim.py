"""The PSF check on simulated data with known PSFs: true, 20 % too narrow, 20 % too wide.

For every case (dimensionality, structure, photons, seed) the simulator draws one acquisition
through the true pupil PSF; the check (``physics/psf_check.py``) is then given the true PSF and
PSFs computed at 0.8x and 1.2x the emission wavelength (20 % narrower and wider in every axis).
A verdict is a detection when it names the right direction, a false alarm when it warns for the
true PSF or names the wrong direction; "inconclusive" is neither (the data could not tell).

    python benchmarks/psf_check_sim.py --dims 2 3 --seeds 0 1 2 > benchmarks/results/psf_check.log
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
from int8_recipes import cpu_flags  # benchmarks/ is on sys.path when run as a script
from zsdeconvnet.physics.optics import pupil_psf, z_positions
from zsdeconvnet.physics.psf import check_psf
from zsdeconvnet.physics.psf_check import check_psf_against_data
from zsdeconvnet.physics.simulate import SimulationConfig, simulate

FACTORS = {"true": 1.0, "20% narrow": 0.8, "20% wide": 1.2}
EXPECTED = {"true": "consistent", "20% narrow": "too narrow", "20% wide": "too wide"}
STRUCTURES = {
    2: ("mixed", "filaments", "beads", "puncta", "membranes", "nuclei"),
    3: ("mixed", "filaments", "beads", "puncta", "sheets"),
}


def config(dims: int, structure: str, photons: float, seed: int) -> SimulationConfig:
    """The simulator's defaults of ``zsdeconvnet simulate`` (TIRF 2D; water-immersion 3D)."""
    if dims == 2:
        return SimulationConfig(structure=structure, photons=photons, size=256, seed=seed)
    return SimulationConfig(
        structure=structure,
        photons=photons,
        dims=3,
        size=128,
        z_size=32,
        pixel_nm=92.6,
        na=1.1,
        refractive_index=1.33,
        oversample=2,
        seed=seed,
    )


def given_psf(cfg: SimulationConfig, factor: float):
    """The PSF a user would hand over, computed at ``factor`` x the true wavelength."""
    wavelength = cfg.wavelength_nm * factor
    if cfg.dims == 2:
        data = pupil_psf(31, cfg.pixel_nm, cfg.na, wavelength, cfg.refractive_index)[0]
        return check_psf(data, (cfg.pixel_nm,) * 2, 2), (cfg.pixel_nm,) * 2
    z = z_positions(31, cfg.z_step_nm)
    data = pupil_psf(31, cfg.pixel_nm, cfg.na, wavelength, cfg.refractive_index, z)
    sizes = (cfg.z_step_nm, cfg.pixel_nm, cfg.pixel_nm)
    return check_psf(data, sizes, 3), sizes


def score(verdict: str, case: str) -> str:
    if verdict == EXPECTED[case]:
        return "right"
    if verdict == "inconclusive":
        return "inconclusive"
    return "false alarm" if case == "true" or verdict != "consistent" else "missed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--photons", type=float, nargs="+", default=[5, 25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(f"machine: {cpu_flags()}", flush=True)
    tally: dict = defaultdict(lambda: defaultdict(int))
    for dims in args.dims:
        for structure in STRUCTURES[dims]:
            for photons in args.photons:
                for seed in args.seeds:
                    cfg = config(dims, structure, photons, seed)
                    image = simulate(cfg)["noisy"].astype(np.float64)
                    for case, factor in FACTORS.items():
                        psf, sizes = given_psf(cfg, factor)
                        start = time.perf_counter()
                        result = check_psf_against_data(image, sizes, psf)
                        seconds = time.perf_counter() - start
                        outcome = score(result.verdict, case)
                        tally[(dims, structure, photons)][(case, outcome)] += 1
                        row = {"dims": dims, "structure": structure, "photons": photons}
                        row |= {"seed": seed, "psf": case, "outcome": outcome}
                        row |= {"seconds": round(seconds, 2), **result.to_dict()}
                        print(json.dumps(row), flush=True)
    print(
        "\n| dims | structure | photons | true: silent | 20% narrow: flagged | "
        "20% wide: flagged | false alarms | inconclusive |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (dims, structure, photons), counts in tally.items():
        n = len(args.seeds)
        alarms = sum(v for (c, o), v in counts.items() if o == "false alarm")
        unsure = sum(v for (c, o), v in counts.items() if o == "inconclusive")
        cells = [f"{counts[(c, 'right')]}/{n}" for c in FACTORS]
        print(
            f"| {dims}D | {structure} | {photons:g} | "
            + " | ".join(cells)
            + f" | {alarms} | {unsure} |"
        )


if __name__ == "__main__":
    main()
