"""2D-SIM: simulation, conventional reconstruction with estimated parameters, ZS-DeconvNet-SIM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from zsdeconvnet.cli.main import main
from zsdeconvnet.physics.metrics import bead_fwhm
from zsdeconvnet.physics.sim_reconstruct import (
    _bands,
    estimate_parameters,
    reconstruct,
    widefield,
)
from zsdeconvnet.physics.sim_simulate import SIMSimulationConfig, simulate_sim
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.io import read_image


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_band_separation_puts_each_band_at_its_frequency():
    n, k = 64, (0.1, 0.27)
    y, x = np.mgrid[0:n, 0:n]
    raw = np.stack(
        [
            1000 + 500 * np.cos(2 * np.pi * (k[0] * y + k[1] * x) + 2 * np.pi * p / 3)
            for p in range(3)
        ]
    )
    freq = np.fft.fftfreq(2 * n) * 2 * n
    for band, sign in zip(_bands(raw, 3), (0, 1, -1)):
        peak = np.unravel_index(np.argmax(np.abs(band)), band.shape)
        assert (freq[peak[0]], freq[peak[1]]) == pytest.approx((sign * 6.4, sign * 17.28), abs=0.51)


@pytest.fixture(scope="module")
def beads():
    cfg = SIMSimulationConfig(structure="beads", size=96, photons=50, seed=2)
    return cfg, simulate_sim(cfg)


def test_parameters_are_estimated_from_the_data(beads):
    cfg, sim = beads
    est = estimate_parameters(sim["raw"], sim["psf"])
    truth = sim["pattern"]
    for k_est, k_true, p_est, p_true, m in zip(
        est.k, truth.k, est.phase, truth.phase, est.modulation
    ):
        assert np.hypot(*np.subtract(k_est, k_true)) < 2e-3  # cycles per camera pixel
        assert abs(np.angle(np.exp(1j * (p_est - p_true)))) < 0.3  # radians
        assert m == pytest.approx(cfg.modulation, abs=0.15)


def test_reconstruction_resolves_about_twice_widefield(beads):
    cfg, sim = beads
    est = estimate_parameters(sim["raw"], sim["psf"])
    sr = reconstruct(sim["raw"], sim["psf"], est, wiener=0.01)
    positions = np.array(cfg.bead_positions_sr)
    sim_fwhm = bead_fwhm(sr, positions, cfg.pixel_nm / 2)
    # camera-grid bead centres: SR pixel i sits at camera coordinate i / 2 - 1/4
    wide = bead_fwhm(widefield(sim["raw"]), positions / 2 - 0.25, cfg.pixel_nm)
    assert sim_fwhm["n"] >= 20 and wide["n"] >= 20
    ratio = sim_fwhm["fwhm_nm"] / wide["fwhm_nm"]
    assert ratio < 0.65, (sim_fwhm, wide)  # measured 0.56 here (98 nm vs 174 nm)


def test_bad_raw_stack_is_one_clear_error(tmp_path):
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, np.zeros((7, 32, 32), np.uint16))
    result = run("sim-reconstruct", path, "--psf", path, "-o", tmp_path / "o.tif")
    assert result.exit_code != 0 and "angles x phases" in result.output
    with pytest.raises(InputError, match="angles x phases"):
        estimate_parameters(np.zeros((4, 32, 32)), np.ones((3, 3)))


def test_sim_end_to_end_through_the_cli(tmp_path):
    sim_dir = tmp_path / "s"
    assert run("simulate", "-o", sim_dir, "--sim", "--size", "64", "--photons", "20").exit_code == 0
    raw, psf = sim_dir / "raw.tif", sim_dir / "psf.tif"
    assert read_image(raw).data.shape == (9, 64, 64)
    result = run("sim-reconstruct", raw, "--psf", psf, "-o", tmp_path / "sim.tif")
    assert result.exit_code == 0, result.output
    recon = read_image(tmp_path / "sim.tif")
    assert recon.data.shape == (128, 128)
    assert recon.pixel_size_nm["X"] == pytest.approx(31.3, rel=1e-3)
    result = run("sim-recorrupt", raw, "-o", tmp_path / "rec", "--pairs", "2")
    assert result.exit_code == 0, result.output
    pair = [read_image(tmp_path / "rec" / f"pair_001_{k}.tif").data for k in ("input", "target")]
    assert pair[0].shape == (9, 64, 64) and not np.array_equal(pair[0], pair[1])
    model = tmp_path / "sim.onnx"
    result = run(
        "train", raw, "--psf", psf, "-o", model, "--mode", "sim2d", "--iterations", "3",
        "--patch-size", "64", "--batch-size", "2", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "sim_training"
    params = json.loads((run_dir / "sim_parameters.json").read_text())
    assert len(params) == 1 and len(params[0]["k"]) == 3
    out = tmp_path / "zs.tif"
    result = run("predict", model, run_dir / "sim_reconstruction.tif", "-o", out, "--quiet")
    assert result.exit_code == 0, result.output
    restored = read_image(out)
    assert restored.data.shape[-2:] == (128, 128)  # no extra upsampling
    assert restored.pixel_size_nm["X"] == pytest.approx(31.3, rel=1e-3)
    assert np.isfinite(restored.data).all()
