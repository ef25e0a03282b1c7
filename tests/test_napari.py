"""The napari plugin in a real (headless) napari viewer: manifest, predict and train widgets."""

from __future__ import annotations

import os

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="the dev extra installs napari")
pytest.importorskip("pytestqt", reason="the dev extra installs pytest-qt")
# A display comes from pytest-xvfb when Xvfb is installed; in CI (.ci/run installs it) a
# missing display is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not os.environ.get("DISPLAY") and os.environ.get("CI") != "true",
    reason="no display: apt-get install xvfb (pytest-xvfb then starts one)",
)

from zsdeconvnet.napari_plugin.widgets import (  # noqa: E402
    PredictWidget,
    TrainWidget,
    sr_placement,
)
from zsdeconvnet.runtime.model import Model  # noqa: E402
from zsdeconvnet.runtime.predict import PredictOptions, Predictor  # noqa: E402


def test_manifest_is_found_and_valid():
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest("zsdeconvnet")
    commands = {c.id for c in manifest.contributions.commands}
    assert {"zsdeconvnet.predict_widget", "zsdeconvnet.train_widget"} <= commands
    assert manifest.contributions.sample_data[0].key == "simulated"


def test_sample_data_opens_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("zsdeconvnet", "simulated")
    noisy, reference = viewer.layers
    assert noisy.data.shape == (256, 256) and reference.data.shape == (512, 512)
    assert np.allclose(reference.scale, np.asarray(noisy.scale) / 2)


def test_sr_layers_line_up_with_the_input():
    # 2x finer: half the pixel size, first output pixel centred a quarter input pixel earlier
    scale, translate = sr_placement((1.0, 0.1, 0.1), (5.0, 0.0, 2.0), (2, 2))
    assert scale == (1.0, 0.05, 0.05)
    assert np.allclose(translate, (5.0, -0.025, 1.975))


def test_predict_widget_adds_scaled_layers_equal_to_the_runtime(make_napari_viewer, qtbot, model2d):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    data = (100 + 50 * rng.random((3, 40, 56))).astype(np.float32)  # a time series
    viewer.add_image(data, name="cell", scale=(1.0, 0.065, 0.065))
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image.value = viewer.layers["cell"]
    widget.model.value = model2d
    widget.tile.value = 0
    widget.run()
    qtbot.waitUntil(lambda: "cell deconvolved" in viewer.layers, timeout=60_000)
    dec = viewer.layers["cell deconvolved"]
    den = viewer.layers["cell denoised"]
    predictor = Predictor(Model(model2d, provider="cpu"), PredictOptions(progress=False))
    for t in range(3):
        expected_den, expected_dec = predictor.predict_array(data[t])
        np.testing.assert_allclose(dec.data[t], expected_dec, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(den.data[t], expected_den, rtol=1e-5, atol=1e-4)
    assert dec.data.shape == (3, 80, 112)
    assert np.allclose(dec.scale, (1.0, 0.0325, 0.0325))
    assert widget.progress.value == 3 and "restored" in widget.status.value
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.ndim == 3 and shot[..., :3].std() > 0


def test_predict_widget_reports_a_bad_model_in_one_line(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.ones((16, 16), np.float32), name="cell")
    widget = PredictWidget(viewer)
    widget.image.value = viewer.layers["cell"]
    widget.model.value = tmp_path / "missing.onnx"
    widget.run()
    assert "does not exist" in widget.status.value and widget.worker is None
    assert len(viewer.layers) == 1


def test_train_widget_trains_writes_a_model_and_can_be_cancelled(
    make_napari_viewer, qtbot, tmp_path
):
    pytest.importorskip("torch")
    from zsdeconvnet.napari_plugin.sample import simulated_widefield
    from zsdeconvnet.physics.optics import pupil_psf
    from zsdeconvnet.runtime.io import write_tiff

    viewer = make_napari_viewer()
    (noisy, meta, _), _ = simulated_widefield(size=160)
    viewer.add_image(noisy, **meta)
    psf_path = tmp_path / "psf.tif"
    write_tiff(psf_path, pupil_psf(15, 62.6, 1.49, 525)[0], "YX", {"X": 62.6, "Y": 62.6})
    widget = TrainWidget(viewer)
    widget.image.value = viewer.layers[0]
    widget.psf.value = psf_path
    widget.output.value = tmp_path / "cell.onnx"
    widget.iterations.value = 3
    widget.run()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=120_000)
    assert (tmp_path / "cell.onnx").exists(), widget.status.value
    assert widget.progress.value == 3 and widget.status.value.startswith("wrote")
    assert Model(tmp_path / "cell.onnx", provider="cpu").metadata.input_pixel_size_nm == (
        62.6,
        62.6,
    )

    # cancelled at the first step: a checkpoint to resume from, no model
    widget.output.value = tmp_path / "stopped.onnx"
    widget.iterations.value = 1000
    widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=120_000)
    assert widget.status.value.startswith("cancelled"), widget.status.value
    assert not (tmp_path / "stopped.onnx").exists()
    assert (tmp_path / "stopped_training" / "checkpoint.pt").exists()
