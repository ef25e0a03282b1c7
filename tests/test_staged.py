"""Stage-by-stage restoration: the graph cut in two, each stage's reach measured at export, and
frames restored stage by stage within the effective-halo contract.

The contract is the effective halo's (``runtime.reach``): every output within ``TOLERANCE``
(1e-5) of the output range of one untiled pass with the exact halo. Images: random, real
(stardist's nuclei, napari's nuclei stack) and simulated, 2D and 3D (``test_effective_halo``).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_effective_halo import _image
from test_restorer import restore_stream
from tiny_models import STAGED_HALO, build_tiny, tiny_metadata
from zsdeconvnet.export.halo import add_effective_halo
from zsdeconvnet.export.onnx import to_onnx_bytes
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.runtime.reach import TOLERANCE, differences, stage_ladder, staged_pass
from zsdeconvnet.runtime.restorer import Restorer
from zsdeconvnet.runtime.staged import fewer_pixels, plan_staged, stage_leads
from zsdeconvnet.runtime.stages import split_stages
from zsdeconvnet.runtime.tiling import plan_tiles
from zsdeconvnet.training.config import preset
from zsdeconvnet.training.networks import build_network

SETTINGS = settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _untiled(path, frame):
    model = Model(path, provider="cpu")
    options = PredictOptions(tile=None, overlap="exact", overlap_z="exact", progress=False)
    return Predictor(model, options).predict_array(frame)


def _worst(tiled, untiled) -> float:
    return max(differences(tiled, untiled).values())


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> dict[int, object]:
    """Two-stage tiny 2D and 3D models, measured as export does."""
    folder = tmp_path_factory.mktemp("staged")
    probes = {
        2: (np.random.default_rng(5).random((96, 96)) * 500 + 100).astype(np.float32),
        3: np.random.default_rng(6).random((24, 40, 40)).astype(np.float32),
    }
    paths = {}
    for ndim, probe in probes.items():
        path = build_tiny(folder / f"staged{ndim}d.onnx", ndim=ndim, staged=True)
        add_effective_halo(path, probe)
        paths[ndim] = path
    return paths


def _sessions(data: bytes):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_the_real_networks_cut_into_two_stages_that_equal_the_whole(mode):
    """The fast presets' networks (random weights), exported as training exports them."""
    cfg = preset("fast", mode)
    torch.manual_seed(0)
    network = build_network(cfg).eval()
    data = to_onnx_bytes(network, 2 if mode == "2d" else 3)
    cut = split_stages(data)
    assert cut is not None
    shape = (1, 1, 64, 64) if mode == "2d" else (1, 1, 8, 32, 32)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    den, dec = _sessions(data).run(None, {"input": x})
    den1 = _sessions(cut[0]).run(None, {"input": x})[0]
    dec2 = _sessions(cut[1]).run(None, {"denoised": den1})[0]
    np.testing.assert_array_equal(den1, den)
    np.testing.assert_array_equal(dec2, dec)
    assert len(cut[0]) + len(cut[1]) < 1.1 * len(data)  # each weight is in one stage


def test_a_graph_whose_second_output_reads_the_input_is_not_cut(model2d, image2d):
    """The older tiny network's deconvolved output reads features of the input, not the
    denoised output: there is no stage 2 to cut, and prediction runs the whole model."""
    model = Model(model2d, provider="cpu")
    assert split_stages(model2d.read_bytes()) is None and model.stages() is None
    assert Predictor(model).stage_reach is None


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_damaged_bytes_never_raise(model2d, data):
    """A truncated or altered file gives a cut or None, never an exception (the session that
    would run it is onnxruntime's, which checks the graph itself)."""
    whole = model2d.read_bytes()
    end = data.draw(st.integers(0, len(whole)))
    flips = data.draw(st.lists(st.integers(0, len(whole) - 1), max_size=4))
    damaged = bytearray(whole[:end])
    for i in flips:
        if i < len(damaged):
            damaged[i] ^= 0xFF
    result = split_stages(bytes(damaged))
    assert result is None or len(result) == 2


def test_export_records_each_stage_reach(staged):
    for ndim, path in staged.items():
        meta = Model(path, provider="cpu").metadata
        record = meta.effective_halo
        assert len(record["stage_halo"]) == ndim
        assert all(0 < s <= h for s, h in zip(record["stage_halo"], meta.halo))
        assert 0 <= record["stage_max_difference"] <= TOLERANCE / record["margin"]
        assert "stage halo" in meta.summary()
        rungs = stage_ladder(meta.halo, meta.size_multiple)
        assert rungs[-1] == list(meta.halo) and record["stage_halo"] in rungs


def test_the_stage_reach_is_the_smallest_rung_that_passes(staged):
    """One rung less context per stage misses the margin on the probe images (2D)."""
    model = Model(staged[2], provider="cpu")
    record = model.metadata.effective_halo
    rungs = stage_ladder(model.metadata.halo, model.metadata.size_multiple)
    below = rungs[rungs.index(record["stage_halo"]) - 1]
    probe = (np.random.default_rng(5).random((96, 96)) * 500 + 100).astype(np.float32)
    tile = record["probe_tile"]
    worst = _worst(staged_pass(model, probe, below, tile), _untiled(staged[2], probe))
    assert worst > TOLERANCE / record["margin"]


@pytest.mark.parametrize("shape", [(70, 75), (9, 130), (200, 33)])
@pytest.mark.parametrize("tile", [8, 16, 30, None])
def test_the_plan_puts_every_tile_on_the_untiled_grid(shape, tile):
    reach, exact, multiple = (5, 5), (13, 13), (4, 4)
    plan = plan_staged(shape, (tile, tile), reach, exact, multiple)
    lead1, lead2 = stage_leads(reach, exact, multiple)
    for axis in range(2):
        assert lead2[axis] >= reach[axis] and lead1[axis] >= reach[axis]
        for t in plan.second.tiles:  # stage 2: on the grid, its reach of context kept
            assert (t.start[axis] + exact[axis]) % multiple[axis] == 0
            assert t.crop[axis].start >= reach[axis]
            assert plan.second.tile_shape[axis] - t.crop[axis].stop >= reach[axis]
            assert t.start[axis] - plan.origin[axis] >= 0
            end = t.start[axis] - plan.origin[axis] + plan.second.tile_shape[axis]
            assert end <= plan.footprint[axis]
        for t in plan.first.tiles:  # stage 1 in footprint coordinates
            assert (t.start[axis] + plan.origin[axis] + exact[axis]) % multiple[axis] == 0
            assert t.crop[axis].start >= reach[axis]
            assert plan.first.tile_shape[axis] - t.crop[axis].stop >= reach[axis]
        covered = sorted((t.inner[axis].start, t.inner[axis].stop) for t in plan.first.tiles)
        assert covered[0][0] == 0 and max(b for _, b in covered) == plan.footprint[axis]


@SETTINGS
@given(
    kind=st.sampled_from(["random", "real", "simulated"]),
    tile=st.integers(8, 48),
    batch=st.integers(1, 3),
)
def test_stage_by_stage_matches_untiled_2d(staged, kind, tile, batch):
    frame = _image(2, kind)
    model = Model(staged[2], provider="cpu")
    reach = model.metadata.effective_halo["stage_halo"]
    tiled = staged_pass(model, frame, reach, (tile, tile), batch)
    assert tiled[1].shape == tuple(2 * s for s in frame.shape)
    assert _worst(tiled, _untiled(staged[2], frame)) <= TOLERANCE


@SETTINGS
@given(
    kind=st.sampled_from(["random", "real", "simulated"]),
    tile=st.integers(8, 24),
    tile_z=st.integers(2, 10),
)
def test_stage_by_stage_matches_untiled_3d(staged, kind, tile, tile_z):
    stack = _image(3, kind)
    model = Model(staged[3], provider="cpu")
    reach = model.metadata.effective_halo["stage_halo"]
    tiled = staged_pass(model, stack, reach, (tile_z, tile, tile), batch=2)
    assert tiled[1].shape == (stack.shape[0], 2 * stack.shape[1], 2 * stack.shape[2])
    assert _worst(tiled, _untiled(staged[3], stack)) <= TOLERANCE


def test_predict_goes_stage_by_stage_where_it_computes_fewer_pixels(staged):
    model = Model(staged[2], provider="cpu")
    frame = _image(2, "real")
    untiled = _untiled(staged[2], frame)
    for tile in (8, 24, None):
        predictor = Predictor(model, PredictOptions(tile=tile, progress=False))
        tiled = predictor.predict_array(frame)
        one_pass = predictor.plan(frame.shape)
        plan = plan_staged(
            frame.shape, [tile, tile], predictor.stage_reach, model.metadata.halo, (2, 2)
        )
        assert fewer_pixels(plan, one_pass)  # each stage reaches 6 px, the two 10
        assert predictor._restorer()._staged is not None
        assert _worst(tiled, untiled) <= TOLERANCE


def test_one_pass_is_kept_where_the_stages_reach_almost_as_far_as_the_whole():
    """The fast 3D network trained on filaments (RESULTS.md): 12x19x19 px per stage against
    14x23x23 for the whole model; at 8 planes and 128 px the stages would compute more."""
    shape, tile, multiple = (16, 128, 128), (8, 128, 128), (1, 1, 1)
    staged = plan_staged(shape, tile, (12, 19, 19), (36, 59, 59), multiple)
    one_pass = plan_tiles(shape, tile, (14, 23, 23), multiple)
    assert not fewer_pixels(staged, one_pass)
    assert fewer_pixels(staged, plan_tiles(shape, tile, (36, 59, 59), multiple))


def test_too_little_context_per_stage_breaks_the_contract(staged):
    """Negative control: the property above depends on each stage's context (it can fail)."""
    frame = _image(2, "real")
    model = Model(staged[2], provider="cpu")
    assert _worst(staged_pass(model, frame, (2, 2), (16, 16)), _untiled(staged[2], frame)) > (
        TOLERANCE
    )


def test_which_path_prediction_takes(staged):
    model = Model(staged[3], provider="cpu")
    reach = tuple(model.metadata.effective_halo["stage_halo"])

    def stage_reach(**options):
        return Predictor(model, PredictOptions(**options)).stage_reach

    assert stage_reach() == reach == stage_reach(overlap="effective", overlap_z="effective")
    assert stage_reach(overlap="exact") is None  # one pass with the exact halo, as asked
    assert stage_reach(overlap_z="exact") is None and stage_reach(overlap=4) is None
    with_exact = Predictor(model, PredictOptions(tile=8, overlap="exact", overlap_z="exact"))
    stack = _image(3, "random")
    untiled = _untiled(staged[3], stack)
    assert _worst(with_exact.predict_array(stack), untiled) <= 1e-6


def test_the_api_restores_a_stream_stage_by_stage_without_new_buffers(staged):
    rng = np.random.default_rng(0)
    frames = [rng.poisson(50, (300, 280)).astype(np.uint16) for _ in range(3)]
    restorer = Restorer(staged[2], tile=64)
    _, again = restore_stream(restorer, frames)
    assert restorer._staged is not None
    untiled = _untiled(staged[2], frames[2])
    assert _worst((again.denoised, again.deconvolved), untiled) <= TOLERANCE


@pytest.mark.parametrize("stage", [[STAGED_HALO + 1, 2], [0, 2], [2], "2"])
def test_a_corrupt_stage_halo_is_refused(stage):
    with pytest.raises(InputError, match="stage_halo"):
        tiny_metadata(
            2, halo=(STAGED_HALO,) * 2, effective_halo={"halo": [2, 2], "stage_halo": stage}
        )
