"""PSF generation against physics, and PSF checking with one clear message per fault."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from scipy.special import j1
from zsdeconvnet.cli.main import main
from zsdeconvnet.physics.optics import (
    axial_fwhm_nm,
    gaussian_psf,
    gibson_lanni_psf,
    pupil_psf,
    z_positions,
)
from zsdeconvnet.physics.psf import PSF, check_psf, crop_psf, read_psf, resample_psf
from zsdeconvnet.runtime.errors import InputError


def fwhm(profile: np.ndarray, step: float) -> float:
    """Full width at half maximum of a 1D peak by linear interpolation of the crossings."""
    p = profile / profile.max()
    c = int(np.argmax(p))
    r = c
    while p[r] > 0.5:
        r += 1
    left = c
    while p[left] > 0.5:
        left -= 1
    xr = r - 1 + (p[r - 1] - 0.5) / (p[r - 1] - p[r])
    xl = left + 1 - (p[left + 1] - 0.5) / (p[left + 1] - p[left])
    return (xr - xl) * step


@pytest.mark.parametrize("na, wavelength", [(1.49, 525), (1.2, 600), (0.8, 488)])
def test_lateral_fwhm_is_051_lambda_over_na(na, wavelength):
    step = 8.0
    psf = pupil_psf(151, step, na, wavelength, 1.518)[0]
    assert fwhm(psf[75], step) == pytest.approx(0.51 * wavelength / na, rel=0.03)


@pytest.mark.parametrize("na, n", [(1.1, 1.33), (1.4, 1.518)])
def test_axial_fwhm_matches_textbook(na, n):
    step = 20.0
    psf = pupil_psf(41, 40.0, na, 525, n, z_positions(101, step))
    expected = axial_fwhm_nm(na, 525, n)
    assert fwhm(psf[:, 20, 20], step) == pytest.approx(expected, rel=0.10)


def test_pupil_model_matches_analytic_airy_disk():
    """An independent implementation: the Airy pattern (2 J1(v)/v)^2 from scipy's Bessel J1."""
    step, na, wl = 10.0, 1.3, 520.0
    psf = pupil_psf(101, step, na, wl, 1.518, oversample=1)[0]
    r = (np.arange(101) - 50) * step
    v = 2 * np.pi * na * np.abs(r) / wl
    airy = np.where(v == 0, 1.0, (2 * j1(v) / np.where(v == 0, 1, v)) ** 2)
    profile = psf[50] / psf[50].max()
    assert np.abs(profile - airy)[35:66].max() < 0.02


def test_pupil_model_agrees_with_gibson_lanni_package_at_matched_indices():
    """Gibson-Lanni (microscpsf-py) with no index mismatch reduces to the same in-focus PSF."""
    pytest.importorskip("microscPSF")
    a = pupil_psf(41, 25.0, 1.2, 525, 1.518)[0]
    b = gibson_lanni_psf(41, 25.0, 1.2, 525, 1.518, sample_index=1.518)[0]
    assert fwhm(b[20], 25.0) == pytest.approx(fwhm(a[20], 25.0), rel=0.05)


def test_gaussian_model_has_the_same_widths():
    g = gaussian_psf(101, 10.0, 1.49, 525)[0]
    assert fwhm(g[50], 10.0) == pytest.approx(0.514 * 525 / 1.49, rel=0.03)


def test_psf_command_writes_pixel_size_and_z_step(tmp_path):
    out = tmp_path / "psf3d.tif"
    result = CliRunner().invoke(
        main,
        [
            "psf",
            "-o",
            str(out),
            "--na",
            "1.1",
            "--wavelength",
            "525",
            "--pixel-size",
            "92.6",
            "--z-step",
            "200",
            "--z-size",
            "21",
            "--refractive-index",
            "1.33",
        ],
    )
    assert result.exit_code == 0, result.output
    psf = read_psf(out, ndim=3)
    assert psf.data.shape == (21, 31, 31)
    assert psf.pixel_size_nm == pytest.approx((200, 92.6, 92.6), rel=1e-4)
    assert psf.data.sum() == pytest.approx(1, rel=1e-5)


def test_psf_help_has_an_example():
    result = CliRunner().invoke(main, ["psf", "--help"])
    assert "Examples" in result.output and "--wavelength 525" in result.output


# -- checking -----------------------------------------------------------------------------------

GOOD = pupil_psf(31, 62.6, 1.49, 525)[0]


def test_even_size_is_refused_with_the_fix():
    with pytest.raises(InputError, match=r"even size 32x32.*crop or pad it by one pixel"):
        check_psf(np.pad(GOOD, ((0, 1), (0, 1))), (62.6, 62.6), 2)


def test_empty_psf_is_refused():
    with pytest.raises(InputError, match="empty"):
        check_psf(np.zeros((31, 31)), (62.6, 62.6), 2)


def test_nan_psf_is_refused():
    bad = GOOD.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_psf(bad, (62.6, 62.6), 2)


def test_2d_psf_for_3d_data_is_refused_with_the_fix():
    with pytest.raises(InputError, match=r"2D but the data is 3D.*--z-size"):
        check_psf(GOOD, (62.6, 62.6), 3)


def test_far_off_centre_is_refused():
    with pytest.raises(InputError, match="far from the centre"):
        check_psf(np.roll(GOOD, 12, axis=1), (62.6, 62.6), 2)


def test_slightly_off_centre_is_recentred_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        psf = check_psf(np.roll(GOOD, (2, -1), axis=(0, 1)), (62.6, 62.6), 2)
    assert np.unravel_index(psf.data.argmax(), psf.data.shape) == (15, 15)
    assert "moved to the centre" in caplog.text


def test_camera_background_is_subtracted_with_a_warning(caplog):
    measured = GOOD / GOOD.max() * 1000 + 100 + np.random.default_rng(0).normal(0, 1, GOOD.shape)
    with caplog.at_level(logging.WARNING):
        psf = check_psf(measured, (62.6, 62.6), 2)
    assert "background" in caplog.text
    assert psf.data.sum() == pytest.approx(1, rel=1e-5)
    assert np.abs(psf.data - GOOD).max() < 0.03 * GOOD.max()


def test_3d_psf_for_2d_data_uses_the_focal_plane(caplog):
    stack = pupil_psf(31, 62.6, 1.49, 525, z_nm=z_positions(7, 200))
    with caplog.at_level(logging.WARNING):
        psf = check_psf(stack, (200, 62.6, 62.6), 2)
    assert psf.data.shape == (31, 31) and "in-focus plane 3" in caplog.text


def test_psf_file_without_pixel_size_asks_for_it(tmp_path):
    path = tmp_path / "bead.tif"
    tifffile.imwrite(path, GOOD)
    with pytest.raises(InputError, match="--psf-pixel-size"):
        read_psf(path, 2)
    assert read_psf(path, 2, pixel_size_nm=62.6).pixel_size_nm == (62.6, 62.6)


def test_resampling_to_the_sr_grid_keeps_the_physical_width():
    fine = pupil_psf(61, 31.3, 1.49, 525)[0]
    coarse = PSF(GOOD, (62.6, 62.6))
    sr = resample_psf(coarse, (31.3, 31.3))
    assert sr.data.shape[0] % 2 == 1
    assert sr.data.sum() == pytest.approx(1, rel=1e-5)
    assert fwhm(sr.data[sr.data.shape[0] // 2], 31.3) == pytest.approx(
        fwhm(fine[30], 31.3), rel=0.08
    )


def test_crop_to_four_sigma():
    big = PSF(pupil_psf(101, 31.3, 1.49, 525)[0], (31.3, 31.3))
    small = crop_psf(big)
    assert small.data.shape[0] % 2 == 1 and small.data.shape[0] < 40
    assert small.data.sum() == pytest.approx(1, rel=1e-5)
