"""Live restoration inside a real acquisition engine: a pymmcore-plus MDA (its pure-Python
device layer, no Micro-Manager binaries) with a camera serving a shipped real image."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

# pymmcore-plus configures logging when imported: the root logger to DEBUG (which every later
# test would then feel) and a log file; keep the first as it was, skip the second
os.environ.setdefault("PYTEST_RUNNING", "1")  # pymmcore-plus: no log file
_root_level = logging.getLogger().level
pytest.importorskip("pymmcore_plus")
logging.getLogger().setLevel(_root_level)
zarr = pytest.importorskip("zarr")

import useq  # noqa: E402
from pymmcore_plus.experimental.unicore import SimpleCameraDevice, UniMMCore  # noqa: E402
from zsdeconvnet.runtime.errors import InputError  # noqa: E402
from zsdeconvnet.runtime.mda import MDARestoration  # noqa: E402
from zsdeconvnet.runtime.model import Model  # noqa: E402
from zsdeconvnet.runtime.predict import PredictOptions, Predictor  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "nuclei2d.onnx"
INTERVAL_S = 0.25


class ImageCamera(SimpleCameraDevice):
    """A camera that images a real sample: each frame the clean image with fresh Poisson noise,
    plus an offset, as uint16; it keeps what it served."""

    def __init__(self, clean: np.ndarray):
        super().__init__()
        self.clean, self.exposure = clean, 10.0
        self.rng = np.random.default_rng(0)
        self.served: list[np.ndarray] = []

    def get_exposure(self) -> float:
        return self.exposure

    def set_exposure(self, value: float) -> None:
        self.exposure = value

    def sensor_shape(self) -> tuple[int, int]:
        return self.clean.shape

    def dtype(self):
        return np.uint16

    def snap(self, buffer: np.ndarray):
        buffer[:] = self.rng.poisson(self.clean) + 100
        self.served.append(buffer.copy())
        return {}


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    import tifffile
    from zsdeconvnet.training.sample_data import stardist_nuclei

    try:
        image = tifffile.imread(stardist_nuclei())[:160, :192].astype(np.float64)
    except Exception:
        pytest.skip("stardist's image is not installed (make installs it)")
    return 20 * (image - image.min()) / np.ptp(image) + 2  # 2-22 photons per pixel


def microscope(sample: np.ndarray) -> tuple[UniMMCore, ImageCamera]:
    core = UniMMCore()
    camera = ImageCamera(sample)
    core.loadPyDevice("Camera", camera)
    core.initializeDevice("Camera")
    core.setCameraDevice("Camera")
    core.setAutoShutter(False)
    return core, camera


def test_every_frame_of_an_mda_is_written_raw_and_restored_as_predict_restores_it(sample, tmp_path):
    core, camera = microscope(sample)
    held: list[float] = []

    @core.mda.events.frameReady.connect
    def timed(*args):  # connected before ours: marks when our callback starts
        held.append(time.perf_counter())

    sequence = useq.MDASequence(time_plan={"interval": INTERVAL_S, "loops": 24})
    with MDARestoration(core, SHIPPED, tmp_path / "run") as live:
        core.mda.events.frameReady.connect(lambda *a: held.append(time.perf_counter()))
        core.mda.run(sequence)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["frames_acquired"] == 24 == summary["frames_restored"]
    assert summary["frames_dropped"] == 0 and summary["policy"] == "queue"
    assert [e["t"] for e in summary["events"]] == list(range(24))
    raw = zarr.open_array(str(tmp_path / "run" / "raw.zarr" / "0"), mode="r")[:]
    restored = zarr.open_array(str(tmp_path / "run" / "deconvolved.zarr" / "0"), mode="r")[:]
    assert raw.shape == (24, 160, 192) and restored.shape == (24, 320, 384)
    assert np.array_equal(raw, np.stack(camera.served))  # every raw frame, as served
    predictor = Predictor(Model(SHIPPED, provider="cpu"), PredictOptions(progress=False))
    for t in (0, 11, 23):  # each restored frame is what predict gives for that raw frame
        _, dec = predictor.predict_array(raw[t])
        assert np.abs(restored[t] - dec).max() <= 1e-6 * np.ptp(dec)
    # the default policy never held the acquisition for a frame interval: our callback (raw
    # write and queueing) ran between the two markers of each frame
    pairs = np.array(held).reshape(-1, 2)
    assert (pairs[:, 1] - pairs[:, 0]).max() < INTERVAL_S
    assert summary["acquisition_held_ms_max"] < 1e3 * INTERVAL_S
    # pixel sizes: the model's training size (the core has none), halved for the output
    attrs = zarr.open_group(str(tmp_path / "run" / "deconvolved.zarr"), mode="r").attrs
    scale = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale["scale"][-1] == pytest.approx(summary["pixel_size_nm"] / 2e3)
    assert "frames acquired 24" in live.summary.line()


def test_drop_policy_loses_restorations_never_raw_frames(sample, tmp_path):
    core, camera = microscope(sample)
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 12})
    with MDARestoration(core, SHIPPED, tmp_path / "run", policy="drop", max_queue=1) as live:
        core.mda.run(sequence)
    summary = live.summary
    assert summary.acquired == 12 and summary.dropped > 0
    assert summary.restored + summary.dropped == 12
    raw = zarr.open_array(str(tmp_path / "run" / "raw.zarr" / "0"), mode="r")[:]
    assert np.array_equal(raw, np.stack(camera.served))


def test_an_output_folder_is_never_reused_and_3d_models_are_refused(sample, tmp_path, model3d):
    core, _ = microscope(sample)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    with pytest.raises(InputError, match="new output folder"):
        MDARestoration(core, SHIPPED, tmp_path / "run")
    with pytest.raises(InputError, match="2D model"):
        MDARestoration(core, model3d, tmp_path / "other")
