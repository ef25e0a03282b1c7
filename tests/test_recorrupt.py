"""Recorruption gives independent, unbiased noisy pairs with the predicted variances."""

from __future__ import annotations

import numpy as np
import pytest
from zsdeconvnet.training.recorrupt import NoiseModel, estimate_noise, local_mean, recorrupt

OFFSET, READ_VAR = 100.0, 4.0


@pytest.fixture(scope="module")
def camera():
    """A smooth clean image and many Poisson-Gaussian exposures of it (256 x 256, ADU)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    clean = 2 + 30 * (np.sin(xx / 17) * np.cos(yy / 23)) ** 2
    return clean, rng


def exposure(clean, rng):
    return rng.poisson(clean) + rng.normal(0, np.sqrt(READ_VAR), clean.shape) + OFFSET


def test_input_and_target_noises_are_uncorrelated_and_unbiased(camera):
    clean, rng = camera
    y = exposure(clean, rng)
    noise = NoiseModel(background=OFFSET, beta2=READ_VAR)
    x, t = recorrupt(y, noise, alpha=1.0, beta1=1.0, beta2_scale=1.0, rng=rng)
    nx, nt = x - clean - OFFSET, t - clean - OFFSET
    assert abs(np.corrcoef(nx.ravel(), nt.ravel())[0, 1]) < 0.02
    assert abs(nx.mean()) < 0.1 and abs(nt.mean()) < 0.1


def test_variances_follow_the_formula(camera):
    clean, rng = camera
    alpha = 1.3
    samples_x, samples_t = [], []
    for _ in range(30):
        y = exposure(clean, rng)
        x, t = recorrupt(y, NoiseModel(OFFSET, READ_VAR), alpha, 1.0, 1.0, rng)
        samples_x.append(x - y)
        samples_t.append(t - y)
    # added noise: alpha^2 sigma^2 and sigma^2 / alpha^2 with sigma^2 = H(y) - b + beta2
    sigma2 = np.maximum(local_mean(clean + OFFSET) - OFFSET, 0) + READ_VAR
    ratio_x = np.var(np.stack(samples_x), axis=0).mean() / (alpha**2 * sigma2).mean()
    ratio_t = np.var(np.stack(samples_t), axis=0).mean() / (sigma2 / alpha**2).mean()
    assert ratio_x == pytest.approx(1, abs=0.05) and ratio_t == pytest.approx(1, abs=0.05)


def test_a_wrong_noise_model_makes_the_noises_correlated(camera):
    """Negative control: with beta2 far too large the two noises anti-correlate."""
    clean, rng = camera
    y = exposure(clean, rng)
    x, t = recorrupt(y, NoiseModel(OFFSET, 25 * READ_VAR), 1.0, 1.0, 1.0, rng)
    nx, nt = x - clean - OFFSET, t - clean - OFFSET
    assert np.corrcoef(nx.ravel(), nt.ravel())[0, 1] < -0.3


def test_beta2_estimated_from_background_pixels():
    rng = np.random.default_rng(1)
    clean = np.zeros((256, 256))
    clean[64:128, 64:200] = 40
    y = rng.poisson(clean + 0.0) + rng.normal(0, np.sqrt(READ_VAR), clean.shape) + OFFSET
    est = estimate_noise(y)
    assert est.beta2 == pytest.approx(READ_VAR, rel=0.15)
    assert est.background == pytest.approx(OFFSET, abs=0.5)
    assert estimate_noise(y, background=90.0).background == 90.0
