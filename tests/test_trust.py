"""Knowing when to trust a result: the PSF check against the data, and the quality report's
warnings (each made to fire, and kept silent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.ndimage import gaussian_filter
from zsdeconvnet.cli.main import main
from zsdeconvnet.physics.optics import pupil_psf, z_positions
from zsdeconvnet.physics.psf import check_psf, crop_psf, resample_psf
from zsdeconvnet.physics.psf_check import check_psf_against_data, psf_cutoff
from zsdeconvnet.physics.quality import (
    MAX_CLIPPED,
    MAX_RESIDUAL_STRUCTURE,
    MAX_RINGING,
    assess,
)
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.io import write_tiff
from zsdeconvnet.runtime.metadata import ModelMetadata

EXPECTED = {0.8: "too narrow", 1.0: "consistent", 1.2: "too wide"}


def psf2d(factor: float, pixel: float = 62.6, na: float = 1.49):
    """The pupil PSF at ``factor`` x 525 nm: 0.8 is 20 % too narrow, 1.2 20 % too wide."""
    return check_psf(pupil_psf(31, pixel, na, 525 * factor)[0], (pixel, pixel), 2)


@pytest.fixture(scope="module")
def filaments2d():
    cfg = SimulationConfig(structure="filaments", photons=25, size=128, seed=0)
    return simulate(cfg)["noisy"].astype(np.float64)


@pytest.mark.parametrize("factor", sorted(EXPECTED))
def test_psf_check_2d_flags_a_wrong_psf_either_way_and_passes_the_true_one(filaments2d, factor):
    result = check_psf_against_data(filaments2d, (62.6, 62.6), psf2d(factor))
    assert result.verdict == EXPECTED[factor], result.message()
    assert result.warns == (factor != 1.0)
    if factor != 1.0:  # the ratio says by how much: about the 20 % put in
        assert result.ratio == pytest.approx(factor, abs=0.08)
        assert ("too narrow" if factor < 1 else "too wide") in result.message()


def test_psf_check_3d_flags_a_wrong_psf_either_way_and_passes_the_true_one():
    cfg = SimulationConfig(
        structure="mixed",
        photons=25,
        dims=3,
        size=128,
        z_size=32,
        pixel_nm=92.6,
        na=1.1,
        refractive_index=1.33,
        oversample=2,
        seed=0,
    )
    stack = simulate(cfg)["noisy"].astype(np.float64)
    sizes = (160.0, 92.6, 92.6)
    for factor, verdict in EXPECTED.items():
        data = pupil_psf(31, 92.6, 1.1, 525 * factor, 1.33, z_positions(31, 160.0))
        result = check_psf_against_data(stack, sizes, check_psf(data, sizes, 3))
        assert result.verdict == verdict, (factor, result.message())


def test_psf_check_never_warns_on_pure_noise_or_a_field_too_small():
    noise = simulate(SimulationConfig(structure="empty", photons=25, size=128, seed=1))["noisy"]
    for factor in EXPECTED:
        result = check_psf_against_data(noise.astype(float), (62.6, 62.6), psf2d(factor))
        assert result.verdict == "inconclusive" and not result.warns
    small = np.random.default_rng(0).poisson(10, (16, 64, 64)).astype(float)
    psf3d = pupil_psf(15, 92.6, 1.1, 525, 1.33, z_positions(15, 160.0))
    result = check_psf_against_data(
        small, (160.0, 92.6, 92.6), check_psf(psf3d, (160.0, 92.6, 92.6), 3)
    )
    assert result.verdict == "inconclusive" and "smaller than" in result.message()
    assert json.dumps(result.to_dict(), allow_nan=False)  # NaN written as null
    # pixels coarser than the optics' Nyquist sampling (stardist's assumed 325 nm with NA 0.75): the
    # PSF's edge lies beyond what the pixel grid shows
    coarse = check_psf(pupil_psf(9, 325.0, 0.75, 460.0, 1.0)[0], (325.0, 325.0), 2)
    result = check_psf_against_data(noise.astype(float), (325.0, 325.0), coarse)
    assert result.verdict == "inconclusive" and "sample coarser" in result.message()


def test_check_psf_command_reports_estimates_and_refuses_bad_options(filaments2d, tmp_path):
    image = tmp_path / "cell.tif"
    write_tiff(image, filaments2d.astype(np.uint16), "YX", {"X": 62.6, "Y": 62.6})
    wide = tmp_path / "wide.tif"
    runner = CliRunner()
    args = ["psf", "-o", wide, "--na", "1.2", "--wavelength", "525", "--pixel-size", "62.6"]
    assert runner.invoke(main, [str(a) for a in args]).exit_code == 0
    result = runner.invoke(
        main, ["check-psf", str(image), "--psf", str(wide), "--estimate", "--na", "1.2"]
    )
    assert result.exit_code == 0, result.output
    assert "too wide" in result.output
    na = float(result.output.split("NA ")[1].split()[0])
    assert na == pytest.approx(1.49, abs=0.12)  # the simulator's true NA
    result = runner.invoke(main, ["check-psf", str(image), "--psf", str(wide), "--json"])
    assert json.loads(result.output)["verdict"] == "too wide"
    result = runner.invoke(main, ["check-psf", str(image), "--psf", str(wide), "--tolerance", "2"])
    assert result.exit_code == 2 and "--tolerance" in result.output


# -- the quality report -------------------------------------------------------------------


@pytest.fixture(scope="module")
def restoration():
    """A simulated acquisition and what a perfect restoration gives: the ground truth on the 2x
    grid, in the raw image's units, slightly smoothed and with a little texture (as a network's
    output has)."""
    cfg = SimulationConfig(structure="puncta", photons=25, size=128, seed=3)
    sim = simulate(cfg)
    psf = check_psf(sim["psf"], (62.6, 62.6), 2)
    offset = cfg.offset_adu + cfg.background_photons
    good = gaussian_filter(4 * sim["gt"], 0.7) + offset
    good = good + np.random.default_rng(0).normal(0, 0.5, good.shape)
    return {
        "raw": sim["noisy"].astype(np.float64),
        "denoised": sim["clean"] + offset,
        "good": good,
        "psf_sr": crop_psf(resample_psf(psf, (31.3, 31.3))),
        "cutoff": psf_cutoff(psf),
    }


def report_of(r: dict, deconvolved: np.ndarray):
    return assess(r["raw"], r["denoised"], deconvolved, r["psf_sr"], 62.6, r["cutoff"])


def test_a_good_restoration_raises_no_warning(restoration):
    report = report_of(restoration, restoration["good"])
    assert report.warnings == [], report.warnings
    assert report.residual_structure < MAX_RESIDUAL_STRUCTURE
    assert report.resolution_nm["deconvolved"] < report.resolution_nm["denoised"]
    assert report.clipped_fraction <= MAX_CLIPPED and report.ringing <= MAX_RINGING
    assert "no warnings" in report.summary()


def test_a_blurry_output_is_not_sharper_and_leaves_structure_in_the_residual(restoration):
    report = report_of(restoration, gaussian_filter(restoration["good"], 4))
    text = " ".join(report.warnings)
    assert "not sharper than the input" in text
    assert "residual" in text and report.residual_structure > MAX_RESIDUAL_STRUCTURE


def test_clipped_pixels_are_reported(restoration):
    good = restoration["good"]
    report = report_of(restoration, np.minimum(good, np.percentile(good, 99.5)))
    assert report.clipped_fraction > MAX_CLIPPED
    assert any("clipped flat" in w for w in report.warnings)


def test_dark_halos_around_bright_objects_are_reported_as_ringing(restoration):
    good = restoration["good"]
    base = np.median(good)
    spread = gaussian_filter(good - base, 5)  # a dip 5 SR px wide under and around each object
    halos = good - 0.5 * np.percentile(good - base, 99.9) * spread / spread.max()
    report = report_of(restoration, halos)
    assert report.ringing > MAX_RINGING
    assert any("dark halos" in w for w in report.warnings)


def test_quality_metadata_is_validated_and_shown():
    base = dict(ndim=2, axes="YX", output_scale=(2, 2), size_multiple=(8, 8), halo=(4, 4))
    record = {"summary": "quality: data term 0.02; no warnings", "warnings": ["look here"]}
    meta = ModelMetadata(**base, quality=record)
    assert "quality        : quality: data term" in meta.summary() and "look here" in meta.summary()
    again = ModelMetadata.from_props(meta.to_props())
    assert again.quality == record
    with pytest.raises(InputError, match="quality"):
        ModelMetadata(**base, quality={"summary": 3, "warnings": []})
