"""The in-process API (runtime/restorer.py) and live restoration (runtime/live.py): what
``predict`` gives, buffers reused, safe from threads, and each queue policy."""

from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from zsdeconvnet.cli.main import main
from zsdeconvnet.runtime.errors import InputError
from zsdeconvnet.runtime.io import write_tiff
from zsdeconvnet.runtime.live import LiveRestorer
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.normalize import frame_range
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.runtime.restorer import API_VERSION, Restorer

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "nuclei2d.onnx"


def streamed(model: Path, frame: np.ndarray, options: PredictOptions):
    """The tile-by-tile path ``predict`` takes for images larger than memory (and on GPUs):
    an independent implementation of the same recipe."""
    predictor = Predictor(Model(model, provider="cpu"), options)
    meta = predictor.model.metadata
    lo, hi = frame_range(frame, meta.normalization, "test frame")
    den = np.empty(frame.shape, np.float32)
    dec = np.empty(tuple(s * f for s, f in zip(frame.shape, meta.output_scale)), np.float32)
    predictor._restore_tiled(frame, lo, hi, den, dec, None)
    return den, dec


def restore_stream(restorer: Restorer, frames: list[np.ndarray]):
    """Restore three frames of one shape into the first one's outputs; check that the third
    allocates less than a quarter of a float32 frame and writes into those outputs. Returns
    the first result and the third."""
    out = restorer.restore(frames[0])
    restorer.restore(frames[1], out=out)  # warm
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    again = restorer.restore(frames[2], out=out)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    assert again.deconvolved is out.deconvolved and again.denoised is out.denoised
    frame_bytes = 4 * frames[2].size
    assert peak < 0.25 * frame_bytes, f"{peak} bytes allocated for a {frame_bytes}-byte frame"
    return out, again


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    """A real widefield image (stardist's, shipped in its wheel), cropped to odd sizes."""
    from zsdeconvnet.training.sample_data import stardist_nuclei

    try:
        return tifffile.imread(stardist_nuclei())[40:241, 60:293]
    except Exception:
        pytest.skip("stardist's image is not installed (make installs it)")


def test_restore_equals_predict_on_a_real_image_with_the_shipped_model(cells, tmp_path):
    assert API_VERSION == 1
    # one pass (a fixed overlap): the same tiles as the streamed path, bit for bit
    result = Restorer(SHIPPED, tile=96, overlap=85).restore(cells)
    den, dec = streamed(SHIPPED, cells, PredictOptions(tile=96, overlap=85, progress=False))
    assert np.array_equal(result.deconvolved, dec) and np.array_equal(result.denoised, den)
    # the default restores the shipped model stage by stage: within the contract of the
    # streamed path's effective halo (both 1e-5 of the range from an untiled pass)
    restorer = Restorer(SHIPPED, tile=96)
    result = restorer.restore(cells)
    assert restorer._staged is not None
    den, dec = streamed(SHIPPED, cells, PredictOptions(tile=96, progress=False))
    assert np.abs(result.deconvolved - dec).max() <= 2e-5 * np.ptp(dec)
    assert np.abs(result.denoised - den).max() <= 2e-5 * np.ptp(den)
    assert result.pixel_size_nm == restorer.metadata.input_pixel_size_nm
    assert result.output_pixel_size_nm == tuple(p / 2 for p in result.pixel_size_nm)
    # and what the command line writes for the same frame
    image, out = tmp_path / "cells.tif", tmp_path / "sr.tif"
    write_tiff(image, cells, "YX", {})
    args = ["predict", str(SHIPPED), str(image), "-o", str(out), "--tile", "96", "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert np.abs(tifffile.imread(out) - result.deconvolved).max() <= 1e-6 * np.ptp(dec)


def test_3d_restore_equals_predict(model3d):
    stack = np.random.default_rng(2).poisson(30, (9, 37, 30)).astype(np.uint16)
    result = Restorer(model3d, tile=16, tile_z=4).restore(stack, pixel_size_nm=(300, 90, 90))
    den, dec = streamed(model3d, stack, PredictOptions(tile=16, tile_z=4, progress=False))
    assert np.array_equal(result.deconvolved, dec) and np.array_equal(result.denoised, den)
    assert result.output_pixel_size_nm == (300, 45, 45)


def test_a_stream_of_equal_frames_reuses_every_buffer(model2d):
    rng = np.random.default_rng(0)
    frames = [rng.poisson(50, (300, 280)).astype(np.uint16) for _ in range(4)]
    restorer = Restorer(model2d, tile=64)
    _, again = restore_stream(restorer, frames)
    fresh = Restorer(model2d, tile=64).restore(frames[2])
    assert np.array_equal(again.deconvolved, fresh.deconvolved)


def test_restore_from_threads_gives_what_one_thread_gives(model2d):
    rng = np.random.default_rng(1)
    frames = [rng.poisson(40, (120, 100)).astype(np.float32) for _ in range(6)]
    restorer = Restorer(model2d, tile=48)
    expected = [restorer.restore(f).deconvolved for f in frames]
    got: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        got[k] = restorer.restore(frames[k]).deconvolved

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(got[k], expected[k]) for k in range(len(frames)))


def test_bad_frames_are_one_clear_error(model2d):
    restorer = Restorer(model2d)
    frame = np.random.default_rng(0).random((40, 40), dtype=np.float32)
    out = restorer.restore(frame)
    with pytest.raises(InputError, match="axes"):
        restorer.restore(np.zeros((2, 40, 40)))
    with pytest.raises(InputError, match="NaN"):
        restorer.restore(np.where(frame > 0.5, np.nan, frame))
    with pytest.raises(InputError, match="constant"):
        restorer.restore(np.ones((40, 40)))
    with pytest.raises(InputError, match="out="):
        restorer.restore(np.zeros((41, 40)) + frame[:1, :1], out=out)


class SlowRestorer:
    """Stands in for a model slower than the acquisition (sleeps, then restores)."""

    def __init__(self, restorer: Restorer, seconds: float):
        self.inner, self.seconds = restorer, seconds

    def restore(self, frame, pixel_size_nm=None, out=None):
        time.sleep(self.seconds)
        return self.inner.restore(frame, pixel_size_nm, out)


@pytest.mark.parametrize("policy", ["queue", "drop", "block"])
def test_live_policies_when_restoration_is_slower_than_acquisition(model2d, policy):
    rng = np.random.default_rng(3)
    frames = [rng.poisson(40, (64, 64)).astype(np.uint16) for _ in range(12)]
    restorer = Restorer(model2d)
    done: dict[int, np.ndarray] = {}
    live = LiveRestorer(
        SlowRestorer(restorer, 0.05),
        lambda key, r: done.__setitem__(key, r.deconvolved.copy()),
        policy=policy,
        max_queue=2,
    )
    for k, frame in enumerate(frames):  # a camera at 200 fps, restoration at under 20 fps
        live.submit(k, frame)
        time.sleep(0.005)
    summary = live.close()
    assert summary.acquired == 12 and summary.restored + summary.dropped == 12
    assert summary.restored == len(done) and len(summary.latency_ms) == summary.restored
    if policy == "drop":
        assert summary.dropped > 0 and summary.max_backlog <= 2
    else:
        assert summary.dropped == 0 and sorted(done) == list(range(12))
    if policy == "queue":
        assert summary.max_backlog > 2  # it queued rather than dropping or holding
    if policy == "block":
        assert max(summary.submit_ms) > 20  # held the acquisition until there was room
    for k, deconvolved in done.items():  # each result is its own frame's
        assert np.array_equal(deconvolved, restorer.restore(frames[k]).deconvolved)
    assert "frames acquired 12" in summary.line()


def test_a_frame_that_cannot_be_restored_is_counted_and_the_stream_goes_on(model2d):
    live = LiveRestorer(Restorer(model2d), lambda key, r: None)
    live.submit(0, np.ones((32, 32)))  # constant: nothing to restore
    live.submit(1, np.random.default_rng(0).random((32, 32)))
    summary = live.close()
    assert summary.restored == 1 and len(summary.errors) == 1 and "constant" in summary.errors[0]
