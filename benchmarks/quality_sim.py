"""ZS-DeconvNet-SIM against conventional Wiener-SIM on simulated low-light 2D-SIM.

Per case (structure, photons per raw frame): simulate 9 raw frames with ground truth; the
reference is what ideal SIM would show (the ground truth through the SIM transfer function
of the true pattern with a near-zero Wiener constant); conventional SIM (estimated parameters)
is scored at every Wiener constant of a grid and its best PSNR kept (an oracle choice, like
Richardson-Lucy's best iteration elsewhere); ZS-DeconvNet-SIM is trained zero-shot on the raw
frames (preset ``fast``, mode sim2d) and applied to the conventional reconstruction. PSNR/SSIM
follow the paper's protocol (physics/metrics.py); beads give the lateral FWHM.

    python benchmarks/quality_sim.py --cases mixed:5 beads:5 --iterations 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import fftconvolve
from zsdeconvnet.physics.metrics import bead_fwhm, psnr_ssim
from zsdeconvnet.physics.psf import PSF
from zsdeconvnet.physics.sim_reconstruct import (
    SIMParameters,
    effective_psf,
    reconstruct,
    widefield,
)
from zsdeconvnet.physics.sim_simulate import SIMSimulationConfig, simulate_sim
from zsdeconvnet.training.config import parse_overrides, preset
from zsdeconvnet.training.datasim import SIMAcquisition, SIMPairSampler
from zsdeconvnet.training.trainer import Trainer

WIENER_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
CROP = 16  # SR px kept out of the scores at the borders (FFT edge effects of every method)


def network_outputs(model: torch.nn.Module, image: np.ndarray, lo: float, hi: float):
    """Both stages on a whole (normalised) reconstruction, in its intensity units."""
    m = 8
    h, w = image.shape
    ph, pw = (-h) % m + 2 * m, (-w) % m + 2 * m
    padded = np.pad((image - lo) / (hi - lo), ((m, ph - m), (m, pw - m)), mode="reflect")
    model.eval()
    with torch.no_grad():
        den, dec = model(torch.from_numpy(padded.astype(np.float32))[None, None])
    crop = (slice(m, m + h), slice(m, m + w))
    return [(t[0, 0].float().numpy()[crop] * (hi - lo) + lo) for t in (den, dec)]


def run_case(structure: str, photons: float, args) -> dict:
    sim_cfg = SIMSimulationConfig(structure=structure, size=args.size, photons=photons, seed=5)
    sim = simulate_sim(sim_cfg)
    raw, psf_cam = sim["raw"], sim["psf"]
    truth = sim["pattern"]
    true_params = SIMParameters(
        truth.k, truth.phase, [truth.modulation] * truth.angles, truth.phases
    )
    reference = fftconvolve(
        sim["gt"], effective_psf(true_params, psf_cam, raw.shape[-2:], 1e-3, 63), mode="same"
    )
    px_sr = sim_cfg.pixel_nm / 2
    beads = np.array(sim_cfg.bead_positions_sr) if structure == "beads" else None

    def score(image: np.ndarray) -> dict:
        result = psnr_ssim(image, reference, crop=CROP)
        if beads is not None:
            result["fwhm_nm"] = bead_fwhm(image, beads, px_sr)["fwhm_nm"]
        return {k: round(v, 3) for k, v in result.items()}

    out: dict = {"structure": structure, "photons": photons}
    cfg = preset(
        "fast",
        mode="sim2d",
        iterations=args.iterations,
        seed=args.seed,
        threads=args.threads,
        images=["simulated"],
        **parse_overrides(args.set),
    )
    start = time.perf_counter()
    acquisition = SIMAcquisition.prepare(raw, psf_cam, cfg)
    out["pattern_error"] = {
        "k_cycles_per_px": round(
            max(
                float(np.hypot(*(np.subtract(a, b)))) for a, b in zip(acquisition.params.k, truth.k)
            ),
            5,
        ),
        "modulation": [round(m, 3) for m in acquisition.params.modulation],
    }
    conventional = {}
    for wiener in WIENER_GRID:
        recon = reconstruct(raw, psf_cam, acquisition.params, wiener, acquisition.noise.background)
        conventional[wiener] = score(recon)
    best = max(conventional, key=lambda w: conventional[w]["psnr"])
    out["conventional_by_wiener"] = {str(k): v for k, v in conventional.items()}
    out["conventional_best"] = {"wiener": best, **conventional[best]}
    wf = widefield(raw, background=acquisition.noise.background)
    if beads is not None:
        out["widefield_fwhm_nm"] = round(
            bead_fwhm(wf, beads / 2 - 0.25, sim_cfg.pixel_nm)["fwhm_nm"], 1
        )
    sim_psf = effective_psf(acquisition.params, psf_cam, raw.shape[-2:], cfg.sim_wiener)
    psf = PSF(sim_psf, (px_sr, px_sr), "SIM effective PSF")
    sampler = SIMPairSampler([acquisition], cfg, np.random.default_rng(cfg.seed))
    prepared = time.perf_counter() - start
    trainer = Trainer(cfg, [acquisition.reconstruction], psf, px_sr, None, sampler=sampler)
    trainer.train(progress=args.progress)
    lo, hi = sampler.ranges[0]
    den, dec = network_outputs(trainer.model, acquisition.reconstruction, lo, hi)
    out["zs_denoised"] = score(den)
    out["zs_deconvolved"] = score(dec)
    out["input_reconstruction"] = score(acquisition.reconstruction)
    out["seconds"] = {
        "pairs_and_estimation": round(prepared, 1),
        "training": round(trainer.elapsed, 1),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["mixed:5", "beads:5"])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128, help="raw frame size (camera px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides FIELD=VALUE")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for case in args.cases:
        structure, photons = case.split(":")
        result = run_case(structure, float(photons), args)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
