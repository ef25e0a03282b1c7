"""Tiled prediction equals untiled prediction, for any size, in 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import HALO, Tiny2D, Tiny3D
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.runtime.tiling import plan_tiles, read_tile

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    scale = max(float(np.abs(b).max()), 1e-12)
    return float(np.abs(a - b).max()) <= 1e-5 * scale


def _run(model_path, frame, **options):
    predictor = Predictor(
        Model(model_path, provider="cpu"), PredictOptions(progress=False, **options)
    )
    return predictor.predict_array(frame)


@pytest.mark.parametrize("module, shape", [(Tiny2D, (1, 1, 64, 64)), (Tiny3D, (1, 1, 24, 32, 32))])
def test_halo_covers_the_receptive_field(module, shape):
    """The tiny networks' outputs depend on no input pixel farther than HALO."""
    torch.manual_seed(0)
    net = module().eval()
    x = torch.rand(shape, requires_grad=True)
    centre = tuple(s // 2 for s in shape[2:])
    den, dec = net(x)
    grad = torch.autograd.grad(
        den[(0, 0, *centre)]
        + dec[(0, 0, *[c * 2 for c in centre[:-2]], *[c * 2 for c in centre[-2:]])]
        if len(centre) == 2
        else den[(0, 0, *centre)],
        x,
    )[0][0, 0]
    reach = np.argwhere(grad.abs().numpy() > 0)
    extent = np.abs(reach - np.array(centre)).max()
    assert 0 < extent <= HALO


def test_plan_covers_every_pixel_once():
    plan = plan_tiles((100, 37), (48, 48), (10, 10), (4, 4))
    seen = np.zeros((100, 37), int)
    for tile in plan.tiles:
        seen[tile.inner] += 1
        assert all((s - h) % 4 == 0 for s, h in zip(tile.start, (-10, -10)))
    assert (seen == 1).all()
    assert all(t % 4 == 0 for t in plan.tile_shape)


@pytest.mark.parametrize(
    ("size", "tile", "count", "inner"),
    [(2160, 512, 5, 432), (2560, 512, 5, 512), (1024, 512, 2, 512), (1030, 512, 3, 344)],
)
def test_axes_are_split_into_equal_tiles_of_at_most_the_tile(size, tile, count, inner):
    """No tile is mostly padding: a 2160-px axis at tile 512 is 5 x 432, not 4 x 512 + 112."""
    plan = plan_tiles((size, 64), (tile, None), (8, 8), (8, 8))
    rows = sorted({t.inner[0].start for t in plan.tiles})
    assert len(rows) == count and rows[1] - rows[0] == inner <= tile
    assert plan.tile_shape[0] == inner + 16


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_read_tile_matches_global_padding(mode):
    image = np.arange(7 * 5, dtype=np.float32).reshape(7, 5)
    padded = np.pad(image, 20, mode=mode)
    tile = read_tile(image, (-6, -9), (30, 25), mode)
    np.testing.assert_array_equal(tile, padded[20 - 6 : 20 - 6 + 30, 20 - 9 : 20 - 9 + 25])


@SETTINGS
@given(
    h=st.integers(2, 90),
    w=st.integers(1, 90),
    tile=st.integers(8, 64),
    batch=st.integers(1, 3),
    mode=st.sampled_from(["reflect", "edge"]),
)
def test_tiled_equals_untiled_2d(model2d, h, w, tile, batch, mode):
    frame = np.random.default_rng(h * 1000 + w).random((h, w), dtype=np.float32) * 500 + 100
    den0, dec0 = _run(model2d, frame, tile=None, pad_mode=mode)
    den1, dec1 = _run(model2d, frame, tile=tile, batch=batch, pad_mode=mode)
    assert den1.shape == (h, w) and dec1.shape == (2 * h, 2 * w)
    assert _close(den1, den0) and _close(dec1, dec0)


@SETTINGS
@given(
    d=st.integers(1, 20),
    h=st.integers(2, 40),
    w=st.integers(1, 40),
    tile=st.integers(8, 40),
    tile_z=st.integers(2, 24),
)
def test_tiled_equals_untiled_3d(model3d, d, h, w, tile, tile_z):
    frame = np.random.default_rng(d * h * w).random((d, h, w), dtype=np.float32)
    den0, dec0 = _run(model3d, frame, tile=None, tile_z=None)
    den1, dec1 = _run(model3d, frame, tile=tile, tile_z=tile_z, batch=2)
    assert den1.shape == (d, h, w) and dec1.shape == (d, 2 * h, 2 * w)
    assert _close(den1, den0) and _close(dec1, dec0)


def test_stack_thinner_than_z_tile(model3d):
    frame = np.random.default_rng(0).random((3, 50, 50), dtype=np.float32)
    den0, dec0 = _run(model3d, frame, tile=None)
    den1, dec1 = _run(model3d, frame, tile=24, tile_z=32)
    assert _close(den1, den0) and _close(dec1, dec0)


def test_deep_stacks_get_bounded_3d_tiles(model3d, monkeypatch):
    """Without --tile-z a deep stack is cut in z (then in y-x) below the voxel budget."""
    from zsdeconvnet.runtime import predict as predict_module

    monkeypatch.setattr(predict_module, "MAX_AUTO_TILE_VOXELS", 150_000)
    predictor = Predictor(Model(model3d, provider="cpu"), PredictOptions(tile=None, progress=False))
    plan = predictor.plan((200, 200, 200))
    assert np.prod(plan.tile_shape) <= 150_000 and plan.tile_shape[0] < 200
    frame = np.random.default_rng(1).random((60, 30, 30), dtype=np.float32)
    den0, dec0 = _run(model3d, frame, tile=None, tile_z=60)  # one tile (z given: no budget)
    den1, dec1 = predictor.predict_array(frame)  # several z tiles, still exact
    assert len(predictor.plan(frame.shape)) > 1
    assert _close(den1, den0) and _close(dec1, dec0)


def test_too_small_overlap_makes_seams(model2d):
    """Negative control: the equality above depends on the halo (the test can fail)."""
    frame = np.random.default_rng(3).random((80, 80), dtype=np.float32)
    _, dec0 = _run(model2d, frame, tile=None)
    _, dec1 = _run(model2d, frame, tile=24, overlap=0)
    assert not _close(dec1, dec0)


@pytest.mark.parametrize(
    "message",
    [
        "onnxruntime: Failed to allocate memory for requested buffer",
        # cuDNN refuses tensors of 2^31 elements or more (seen on an H200: batch 4 of 1024^2
        # frames through the paper network's 128-channel tail on the 2x grid)
        "CUDNN failure 3000: CUDNN_STATUS_NOT_SUPPORTED ; expr=cudnnSetTensorNdDescriptor",
    ],
)
def test_out_of_memory_retries_with_smaller_tiles(model2d, monkeypatch, message):
    model = Model(model2d, provider="cpu")
    real_run = model.run
    sizes = []

    def limited(batch, out=None):
        sizes.append(batch.shape[-1])
        if batch.shape[-1] > 40:
            raise RuntimeError(message)
        return real_run(batch, out)

    monkeypatch.setattr(model, "run", limited)
    frame = np.random.default_rng(4).random((100, 100), dtype=np.float32)
    den, dec = Predictor(model, PredictOptions(tile=128, progress=False)).predict_array(frame)
    reference = _run(model2d, frame, tile=None)[1]
    assert max(sizes) > 40 and sizes[-1] <= 40
    assert _close(dec, reference)


@pytest.mark.parametrize("shape", [(37, 52), (5, 20, 26)])
def test_ensemble_averages_the_eight_orientations(model2d, model3d, shape):
    path = model2d if len(shape) == 2 else model3d
    frame = np.random.default_rng(5).random(shape, dtype=np.float32)
    _, ens = _run(path, frame, tile=16, ensemble=True)
    manual = []
    for turns, flip in [(t, f) for f in (False, True) for t in range(4)]:
        view = np.rot90(frame, turns, axes=(-2, -1))
        view = view[..., ::-1] if flip else view
        _, out = _run(path, np.ascontiguousarray(view), tile=None)
        out = out[..., ::-1] if flip else out
        manual.append(np.rot90(out, -turns, axes=(-2, -1)))
    assert _close(ens, np.mean(manual, axis=0))
    assert not _close(ens, _run(path, frame, tile=None)[1])
