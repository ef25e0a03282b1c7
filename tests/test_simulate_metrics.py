"""The simulator's image formation, the paper's metrics, and the Richardson-Lucy baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.ndimage import gaussian_filter
from skimage.restoration import richardson_lucy
from zsdeconvnet.cli.main import main
from zsdeconvnet.physics.metrics import (
    bead_fwhm,
    blank_mask,
    blank_texture,
    data_term,
    decorrelation_resolution,
    frc,
    psnr_ssim,
)
from zsdeconvnet.physics.optics import lateral_fwhm_nm, pupil_psf
from zsdeconvnet.physics.richardson_lucy import best_richardson_lucy, rl_iterates
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.io import read_image


@pytest.fixture(scope="module")
def beads():
    cfg = SimulationConfig(structure="beads", photons=200, size=128, seed=3)
    return cfg, simulate(cfg)


def test_mean_photons_on_structure_and_noise_model():
    cfg = SimulationConfig(structure="filaments", photons=8, size=128, seed=1)
    out = simulate(cfg)
    clean = out["clean"]
    fg = clean > 0.2 * np.percentile(clean, 99.9)
    assert clean[fg].mean() == pytest.approx(8, rel=1e-3)
    residual = out["noisy"].astype(float) - cfg.offset_adu - cfg.background_photons - clean
    # Poisson-Gaussian: variance = signal + background + read noise^2
    expected = clean + cfg.background_photons + cfg.read_noise_e**2
    assert np.mean(residual**2 / expected) == pytest.approx(1.0, abs=0.05)
    assert abs(residual.mean()) < 0.05


def test_shapes_grids_and_3d():
    cfg = SimulationConfig(
        structure="sheets",
        dims=3,
        size=32,
        z_size=8,
        na=1.1,
        refractive_index=1.33,
        oversample=2,
        psf_size=15,
    )
    out = simulate(cfg)
    assert out["noisy"].shape == (8, 32, 32) and out["gt"].shape == (8, 64, 64)
    assert out["psf"].shape == (15, 15, 15) and out["psf"].sum() == pytest.approx(1, rel=1e-4)


def test_widefield_beads_have_the_diffraction_limited_width(beads):
    cfg, out = beads
    positions = np.array(cfg.bead_positions_sr)
    raw = bead_fwhm(out["noisy"].astype(float), (positions + 0.5) / 2 - 0.5, cfg.pixel_nm)
    expected = lateral_fwhm_nm(cfg.na, cfg.wavelength_nm)
    assert raw["n"] > 10
    assert raw["fwhm_nm"] == pytest.approx(expected, rel=0.12)  # pixel integration broadens
    ref = bead_fwhm(out["reference"], positions, cfg.pixel_nm / 2)
    assert ref["fwhm_nm"] == pytest.approx(expected / 2, rel=0.15)


def test_psnr_ranks_images_by_quality(beads):
    _, out = beads
    ref = out["reference"]
    blurred = gaussian_filter(ref, 2)
    assert psnr_ssim(ref, ref)["psnr"] > 60
    assert psnr_ssim(ref * 3 + 7, ref)["psnr"] > 60  # linear fit removes scale and offset
    assert psnr_ssim(blurred, ref)["psnr"] < psnr_ssim(gaussian_filter(ref, 1), ref)["psnr"]


def test_rl_matches_scikit_image_without_downsampling():
    rng = np.random.default_rng(0)
    objects = np.zeros((96, 96))
    objects[32:64, 32:64] = rng.random((32, 32)) ** 4  # dark border: padding modes agree
    psf = pupil_psf(15, 62.6, 1.2, 525)[0].astype(float)
    image = gaussian_filter(objects, 1.0) * 100 + 1e-3
    ours = list(rl_iterates(image, psf, scale=1, max_iter=10, init="flat"))[-1]
    theirs = richardson_lucy(image, psf, num_iter=10, clip=False, filter_epsilon=None)
    inner = (slice(24, -24),) * 2
    np.testing.assert_allclose(ours[inner], theirs[inner], rtol=1e-3, atol=1e-3 * theirs.max())


def test_rl_sharpens_beads(beads):
    cfg, out = beads
    psf_sr = pupil_psf(41, cfg.pixel_nm / 2, cfg.na, cfg.wavelength_nm, cfg.refractive_index)[0]
    k, x, curve = best_richardson_lucy(
        out["noisy"],
        psf_sr,
        out["reference"],
        background=cfg.offset_adu + cfg.background_photons,
        max_iter=40,
        crop=8,
    )
    positions = np.array(cfg.bead_positions_sr)
    assert k >= 2 and max(curve) > curve[0]
    raw = bead_fwhm(out["noisy"].astype(float), (positions + 0.5) / 2 - 0.5, cfg.pixel_nm)
    assert bead_fwhm(x, positions, cfg.pixel_nm / 2)["fwhm_nm"] < 0.8 * raw["fwhm_nm"]


def test_frc_of_independent_noisy_copies_finds_the_resolution():
    cfg = SimulationConfig(structure="filaments", photons=50, size=128, seed=4, density=3)
    clean = simulate(cfg)["clean"]
    rng = np.random.default_rng(9)
    a, b = (rng.poisson(clean + 2).astype(float) for _ in range(2))  # two independent exposures
    res = frc(a, b, cfg.pixel_nm)["resolution_nm"]
    abbe = cfg.wavelength_nm / (2 * cfg.na)
    assert abbe * 0.9 < res < abbe * 2.5


@pytest.mark.parametrize("sigma_px", [1.0, 2.0, 3.0])
def test_decorrelation_tracks_known_resolution(sigma_px):
    """Random points blurred to a known FWHM: a clean image gives that FWHM within 30 %;
    shot noise makes the estimate worse, never better."""
    rng = np.random.default_rng(0)
    field = np.zeros((256, 256))
    field[tuple(rng.integers(0, 256, (2, 3000)))] = 1
    blurred = gaussian_filter(field, sigma_px)
    fwhm = 2.3548 * sigma_px
    clean = decorrelation_resolution(blurred + rng.normal(0, 1e-4, field.shape), pixel_nm=1.0)
    assert 0.9 * fwhm < clean < 1.3 * fwhm
    photons = blurred / blurred.max() * 100
    noisy = decorrelation_resolution(rng.poisson(photons + 5).astype(float), pixel_nm=1.0)
    assert noisy >= clean


def test_simulate_and_evaluate_commands(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "simulate",
            "-o",
            str(tmp_path),
            "--structure",
            "beads",
            "--size",
            "64",
            "--photons",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    noisy = read_image(tmp_path / "noisy.tif")
    assert noisy.pixel_size_nm["X"] == pytest.approx(62.6, rel=1e-4)
    assert read_image(tmp_path / "reference.tif").pixel_size_nm["X"] == pytest.approx(31.3, 1e-4)
    params = json.loads((tmp_path / "params.json").read_text())
    assert params["photons"] == 20 and params["bead_positions_sr"]
    result = runner.invoke(
        main,
        [
            "evaluate",
            str(tmp_path / "noisy.tif"),
            "--reference",
            str(tmp_path / "reference.tif"),
            "--beads",
            str(tmp_path / "params.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert 10 < scores["psnr"] < 40 and scores["fwhm_nm"] > 150
    assert "Example" in runner.invoke(main, ["simulate", "--help"]).output


def test_fourier_damping_removes_column_stripes_without_hurting_psnr():
    from zsdeconvnet.runtime.postprocess import damp_stripes

    out = simulate(SimulationConfig(structure="mixed", photons=25, size=256, seed=3))
    clean = out["clean"]
    striped = clean + np.random.default_rng(0).normal(0, 2, 256)[None, :]  # column offsets

    def stripe_power(x):
        return (np.abs(np.fft.fft2(x - x.mean())) ** 2)[0, 10:-10].sum()

    damped = damp_stripes(striped)
    assert stripe_power(damped) < 0.2 * stripe_power(striped)
    assert psnr_ssim(damped, clean)["psnr"] >= psnr_ssim(striped, clean)["psnr"]
    assert abs(damped.mean() - striped.mean()) < 1e-3 * striped.mean()


@pytest.mark.parametrize("dims", [2, 3])
def test_an_empty_field_is_background_and_camera_noise_only(dims):
    cfg = SimulationConfig(structure="empty", dims=dims, size=64, z_size=8, psf_size=9, seed=2)
    out = simulate(cfg)
    assert not out["gt"].any() and not out["clean"].any()
    residual = out["noisy"].astype(float) - cfg.offset_adu - cfg.background_photons
    assert abs(residual.mean()) < 0.1
    assert residual.var() == pytest.approx(cfg.background_photons + cfg.read_noise_e**2, rel=0.1)


@pytest.mark.parametrize("structure", ["nuclei", "membranes"])
def test_nuclei_and_membranes_are_drawn_in_2d_only(structure):
    cfg = SimulationConfig(structure=structure, photons=10, size=96, seed=4)
    out = simulate(cfg)
    foreground = out["gt"] > 0
    assert 0.01 < foreground.mean() < 0.8  # some structure, not a filled field
    assert out["noisy"].max() > cfg.offset_adu + 10
    with pytest.raises(InputError, match="2D only"):
        SimulationConfig(structure=structure, dims=3)


def test_data_term_prefers_the_true_object_and_blank_texture_catches_invention():
    cfg = SimulationConfig(structure="puncta", photons=30, size=96, seed=5)
    out = simulate(cfg)
    raw = out["noisy"].astype(np.float64)
    psf_sr = pupil_psf(31, cfg.pixel_nm / 2, cfg.na, cfg.wavelength_nm)[0]
    truth = out["gt"] + (cfg.offset_adu + cfg.background_photons)
    blurred = gaussian_filter(truth, 6)
    assert data_term(truth, raw, psf_sr) < data_term(blurred, raw, psf_sr)
    mask = blank_mask(raw)
    assert 100 < mask.sum() < 0.25 * mask.size
    flat = np.full_like(truth, raw[mask].mean())
    invented = flat.copy()
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, truth.shape[0], (2, 200))
    invented[ys, xs] += 5 * raw[mask].std()  # puncta where the sample has none
    assert blank_texture(flat, raw, mask) < 0.01
    assert blank_texture(invented, raw, mask) > 0.1
    assert blank_texture(np.kron(raw, np.ones((2, 2))), raw, mask) == pytest.approx(1.0)
