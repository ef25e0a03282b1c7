"""The effective halo: measured at export, used by default, within its contract.

The contract (``runtime.reach``): with the effective halo every output pixel of a tiled pass
lies within ``TOLERANCE`` (1e-5) of the output range of one untiled pass with the exact halo;
with ``overlap="exact"`` tiled equals untiled to float rounding (1e-6 of the range here).
Images: random, real (stardist's nuclei, napari's nuclei stack) and simulated, 2D and 3D.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import HALO, build_tiny, tiny_metadata
from zsdeconvnet.cli.main import main
from zsdeconvnet.export.halo import add_effective_halo
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.io import write_tiff
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.runtime.reach import MARGIN, TOLERANCE, differences, ladder, probe_images

SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EXACT_ROUNDING = 1e-6


def _run(path, frame, **options):
    model = Model(path, provider="cpu")
    return Predictor(model, PredictOptions(progress=False, **options)).predict_array(frame)


def _worst(tiled, untiled) -> float:
    return max(differences(tiled, untiled).values())


def _probe2d() -> np.ndarray:
    return (np.random.default_rng(5).random((64, 64)) * 500 + 100).astype(np.float32)


def _probe3d() -> np.ndarray:
    return np.random.default_rng(6).random((16, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[int, object]:
    """Tiny 2D and 3D models with their effective halo measured (as export does)."""
    folder = tmp_path_factory.mktemp("measured")
    paths = {}
    for ndim, probe in ((2, _probe2d()), (3, _probe3d())):
        path = build_tiny(folder / f"tiny{ndim}d.onnx", ndim=ndim)
        add_effective_halo(path, probe)
        paths[ndim] = path
    return paths


def _images(ndim: int) -> dict[str, np.ndarray]:
    """Random, real and simulated test images (not the ones the halo was measured on)."""
    from zsdeconvnet.physics.simulate import SimulationConfig, simulate
    from zsdeconvnet.training.sample_data import napari_nuclei_stack, stardist_nuclei

    rng = np.random.default_rng(ndim)
    if ndim == 2:
        real = tifffile.imread(stardist_nuclei())[200:290, 180:266]
        sim = SimulationConfig("mixed", size=80, photons=5, oversample=2, psf_size=11, seed=3)
        shape = (70, 75)
    else:
        real = tifffile.imread(napari_nuclei_stack())[20:34, 100:140, 90:126]
        sim = SimulationConfig(
            "filaments", dims=3, size=32, z_size=12, photons=5, oversample=2, psf_size=9
        )
        shape = (13, 30, 34)
    return {
        "random": (rng.random(shape) * 300 + 50).astype(np.float32),
        "real": np.asarray(real, np.float32),
        "simulated": simulate(sim)["noisy"].astype(np.float32),
    }


IMAGES = {}


def _image(ndim: int, kind: str) -> np.ndarray:
    if ndim not in IMAGES:
        IMAGES[ndim] = _images(ndim)
    return IMAGES[ndim][kind]


def test_export_measures_a_smaller_halo_and_records_how(measured):
    for ndim, path in measured.items():
        meta = Model(path, provider="cpu").metadata
        record = meta.effective_halo
        assert len(record["halo"]) == ndim and all(e < HALO for e in record["halo"])
        assert record["tolerance"] == TOLERANCE and record["margin"] == MARGIN
        assert 0 <= record["max_difference"] <= TOLERANCE / MARGIN
        assert "effective halo" in meta.summary()


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_measured_halo_is_the_smallest_rung_that_passes(measured, ndim):
    """One rung less context misses the margin on the probe images: the search is tight."""
    model = Model(measured[ndim], provider="cpu")
    meta = model.metadata
    record = meta.effective_halo
    rungs = ladder(meta.halo, meta.size_multiple)
    assert rungs[-1] == list(meta.halo) and rungs == sorted(rungs)
    assert all((e - h) % m == 0 for r in rungs for e, h, m in zip(meta.halo, r, meta.size_multiple))
    below = rungs[rungs.index(record["halo"]) - 1]
    probe = _probe2d() if ndim == 2 else _probe3d()
    tile = record["probe_tile"]
    worst = 0.0
    for image in probe_images(probe):
        untiled = _run(measured[ndim], image, tile=None, overlap="exact", overlap_z="exact")
        options = dict(tile=tile[-1], overlap=below[-1])
        if ndim == 3:
            options |= dict(tile_z=tile[0], overlap_z=below[0])
        worst = max(worst, _worst(_run(measured[ndim], image, **options), untiled))
    assert worst > TOLERANCE / MARGIN


@SETTINGS
@given(
    kind=st.sampled_from(["random", "real", "simulated"]),
    overlap=st.sampled_from(["effective", "exact"]),
    tile=st.integers(8, 48),
    batch=st.integers(1, 3),
)
def test_tiled_matches_untiled_2d_with_either_halo(measured, kind, overlap, tile, batch):
    frame = _image(2, kind)
    untiled = _run(measured[2], frame, tile=None, overlap="exact")
    tiled = _run(measured[2], frame, tile=tile, batch=batch, overlap=overlap)
    assert tiled[1].shape == tuple(2 * s for s in frame.shape)
    assert _worst(tiled, untiled) <= (TOLERANCE if overlap == "effective" else EXACT_ROUNDING)


@SETTINGS
@given(
    kind=st.sampled_from(["random", "real", "simulated"]),
    overlap=st.sampled_from(["effective", "exact"]),
    tile=st.integers(8, 24),
    tile_z=st.integers(2, 10),
)
def test_tiled_matches_untiled_3d_with_either_halo(measured, kind, overlap, tile, tile_z):
    stack = _image(3, kind)
    untiled = _run(measured[3], stack, tile=None, overlap="exact", overlap_z="exact")
    tiled = _run(
        measured[3], stack, tile=tile, tile_z=tile_z, batch=2, overlap=overlap, overlap_z=overlap
    )
    assert _worst(tiled, untiled) <= (TOLERANCE if overlap == "effective" else EXACT_ROUNDING)


def test_no_context_breaks_the_contract(measured):
    """Negative control: the property above depends on the context (it can fail)."""
    frame = _image(2, "real")
    untiled = _run(measured[2], frame, tile=None, overlap="exact")
    assert _worst(_run(measured[2], frame, tile=16, overlap=0), untiled) > TOLERANCE


def test_which_halo_prediction_uses(measured, model2d):
    meta = Model(measured[3], provider="cpu").metadata
    effective = tuple(meta.effective_halo["halo"])

    def halo(path, **options):
        return Predictor(Model(path, provider="cpu"), PredictOptions(**options)).halo

    assert halo(measured[3]) == effective == halo(measured[3], overlap="effective")
    assert halo(measured[3], overlap="exact", overlap_z="exact") == meta.halo
    assert halo(measured[3], overlap="exact") == (effective[0], HALO, HALO)
    assert halo(measured[3], overlap=3, overlap_z=1) == (1, 3, 3)
    assert halo(model2d) == (HALO, HALO)  # an older model without a record: the exact halo
    with pytest.raises(InputError, match="overlap"):
        PredictOptions(overlap="half")


@pytest.mark.parametrize(
    "record", [{"halo": [HALO + 1, 2]}, {"halo": [2]}, {"halo": "2"}, {"max_difference": 0}]
)
def test_a_corrupt_effective_halo_is_refused(record):
    with pytest.raises(InputError, match="effective_halo"):
        tiny_metadata(2, effective_halo=record)


def test_an_older_model_gets_a_measured_copy(model2d, tmp_path):
    image = tmp_path / "train.tif"
    write_tiff(image, _probe2d(), "YX", {"X": 65.0, "Y": 65.0})
    before = model2d.read_bytes()
    out = tmp_path / "measured.onnx"
    result = CliRunner().invoke(
        main, ["export", str(model2d), "--image", str(image), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert model2d.read_bytes() == before  # the input is never overwritten
    assert Model(out, provider="cpu").metadata.effective_halo["halo"][0] < HALO
    for args in (["-o", str(tmp_path / "x.onnx")], ["--image", str(image), "-o", str(model2d)]):
        result = CliRunner().invoke(main, ["export", str(model2d), *args])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
    result = CliRunner().invoke(
        main, ["predict", str(model2d), str(image), "-o", "y.tif", "--overlap", "half"]
    )
    assert result.exit_code == 2 and "half" in result.output
