"""The camera gain measured from one image's noise (photon transfer), and how training uses it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from zsdeconvnet.physics.noise import estimate_gain
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.training.recorrupt import resolve_gain

OFFSET = 100.0


@pytest.fixture(scope="module")
def photons():
    """Photo-electrons and read noise (e-) of simulated acquisitions, before the camera's gain:
    a camera of gain g records ``g * electrons + offset`` ADU."""
    out = {}
    for structure, level in (("mixed", 25), ("nuclei", 10), ("filaments", 25)):
        sim = SimulationConfig(structure=structure, photons=level, size=256, seed=3)
        out[structure] = simulate(sim)["noisy"].astype(np.float64) - sim.offset_adu
    return out


def camera(electrons: np.ndarray, gain: float) -> np.ndarray:
    return np.round(electrons * gain + OFFSET)


@pytest.mark.parametrize("gain", [1.0, 8.0, 150.0])
def test_the_gain_of_a_simulated_camera_is_measured(photons, gain):
    """Within 25 % on structured images (RESULTS.md measures the spread over more cases); a
    wrong assumption is off by the whole ratio (150x for the napari nuclei)."""
    for structure, electrons in photons.items():
        found = estimate_gain(camera(electrons, gain))
        assert found.reliable, (structure, found)
        assert 0.75 * gain <= found.gain <= 1.25 * gain, (structure, found)


def test_the_gain_follows_a_rescaled_image(photons):
    electrons = photons["nuclei"]
    one, ten = (estimate_gain(electrons * k + OFFSET).gain for k in (1.0, 10.0))
    assert ten == pytest.approx(10 * one, rel=1e-3)  # samples on a bin edge may move


def test_noise_without_a_range_of_intensities_gives_no_gain():
    rng = np.random.default_rng(0)
    flat = rng.poisson(10.0, (256, 256)) + rng.normal(0, 1.5, (256, 256)) + OFFSET
    found = estimate_gain(flat)
    assert not found.reliable and found.reason and "not used" in found.describe()
    assert not estimate_gain(np.zeros((8, 8))).reliable


def test_a_known_ramp_and_saturated_pixels():
    """A smooth ramp at gain 4 (no structure to leak into the noise), then the same with its
    brightest part clipped flat at the maximum, as a saturated camera gives it."""
    rng = np.random.default_rng(1)
    clean = np.tile(np.linspace(0, 100, 256), (256, 1))
    ramp = (rng.poisson(clean + 2) + rng.normal(0, 1.5, clean.shape)) * 4 + OFFSET
    assert estimate_gain(ramp).gain == pytest.approx(4.0, rel=0.05)
    clipped = np.minimum(ramp, np.percentile(ramp, 90))
    assert estimate_gain(clipped).gain == pytest.approx(4.0, rel=0.1)


def test_resolve_gain_measures_keeps_what_is_set_and_says_why(photons, caplog):
    image = camera(photons["mixed"], 40.0)
    gain, source = resolve_gain([image], None)
    assert source == "measured" and 30 < gain < 50
    with caplog.at_level(logging.WARNING):
        assert resolve_gain([image], 1.0) == (1.0, "set")
    assert "the image's noise says" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert resolve_gain([image], 35.0) == (35.0, "set")
    assert not caplog.text  # set and measured agree: nothing to say
    rng = np.random.default_rng(2)
    flat = rng.normal(OFFSET, 2.0, (128, 128))
    with caplog.at_level(logging.WARNING):
        assert resolve_gain([flat], None) == (1.0, "assumed")
    assert "could not be measured" in caplog.text and "--gain" in caplog.text
