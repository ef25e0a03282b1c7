"""Training pairs made with torch on the device against the numpy pairs they replace."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.ndimage import rotate
from zsdeconvnet.physics.simulate import SimulationConfig, simulate
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.training.config import preset
from zsdeconvnet.training.data2d import PatchSampler
from zsdeconvnet.training.pairs_torch import PairDraw, local_mean, make_pairs, use_torch_pairs
from zsdeconvnet.training.recorrupt import NoiseModel
from zsdeconvnet.training.recorrupt import local_mean as local_mean_numpy

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def frame():
    return simulate(SimulationConfig(structure="mixed", photons=20, size=96, seed=3))["noisy"]


def test_local_mean_matches_scipy_including_edges(frame):
    y = frame[:40, :50].astype(np.float32)
    ours = local_mean(torch.from_numpy(y)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours, local_mean_numpy(y), rtol=1e-5)


def test_geometry_matches_scipy_rotate_crop_turns_and_flip(frame):
    """Without noise (sigma 0) a pair is the transformed window: compare each step's sense."""
    window = frame[:48, :48].astype(np.float32)
    quiet = NoiseModel(background=0.0, beta2=0.0)
    for angle, turns, flip in ((30.0, 0, False), (123.0, 1, True), (301.0, 3, False)):
        draw = PairDraw(window, quiet, (50.0, 450.0), 1.0, 0.0, 0.0, angle, turns, flip, 7)
        x, y = make_pairs([draw], 32, CPU)
        expected = rotate(window.astype(np.float64), angle, reshape=False, order=1)[8:40, 8:40]
        expected = np.rot90(expected, turns)
        expected = (expected[:, ::-1] if flip else expected) - 50.0
        np.testing.assert_allclose(x[0, 0].numpy() * 400.0, expected, atol=2e-3)
        torch.testing.assert_close(x, y)


def test_recorruption_formula_matches_numpy(frame):
    """No rotation: input and target are ``y + alpha sigma z`` and ``y - sigma z / alpha`` with
    numpy's sigma and z from the draw's own seeded generator."""
    window = frame[10:42, 20:52].astype(np.float32)
    noise = NoiseModel(background=100.0, beta2=30.0)
    draw = PairDraw(window, noise, (0.0, 1.0), 1.3, 0.8, 1.1, 0.0, 0, False, 12345)
    x, y = make_pairs([draw], 32, CPU)
    sigma = np.sqrt(0.8 * np.maximum(local_mean_numpy(window) - 100.0, 0) + 1.1 * 30.0)
    z = torch.randn((1, 1, 32, 32), generator=torch.Generator().manual_seed(12345))[0, 0].numpy()
    np.testing.assert_allclose(x[0, 0].numpy(), window + 1.3 * sigma * z, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(y[0, 0].numpy(), window - sigma * z / 1.3, rtol=1e-4, atol=1e-3)


def test_torch_pairs_have_the_statistics_of_numpy_pairs(frame):
    """Same sampler, same draws distribution: the two backends' batches agree in mean, spread
    and input-target noise, within sampling error of 200 pairs each."""
    cfg = preset("fast", patch_size=32, pad_xy=16)
    stats = {}
    for backend in ("numpy", "torch"):
        sampler = PatchSampler([frame.astype(np.float32)], cfg, np.random.default_rng(5))
        if backend == "numpy":
            x, y = (torch.from_numpy(a) for a in sampler.batch(200))
        else:
            x, y = make_pairs([sampler.draw() for _ in range(200)], 32, CPU)
        assert x.shape == y.shape == (200, 1, 32, 32) and x.dtype == torch.float32
        stats[backend] = np.array([x.mean(), y.mean(), x.std(), (x - y).std()])
    np.testing.assert_allclose(stats["torch"], stats["numpy"], rtol=0.08)


def test_backend_choice_and_validation():
    assert use_torch_pairs("auto", torch.device("cuda")) and not use_torch_pairs("auto", CPU)
    assert use_torch_pairs("torch", CPU) and not use_torch_pairs("numpy", torch.device("cuda"))
    with pytest.raises(InputError, match="pair_backend"):
        preset("fast", pair_backend="gpu")
    with pytest.raises(InputError, match="2D recorruption"):
        preset("fast", mode="3d", pair_backend="torch")
    assert dataclasses.replace(preset("fast"), pair_backend="torch").pair_backend == "torch"
