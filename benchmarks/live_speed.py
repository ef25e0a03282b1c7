"""Live restoration in a pymmcore-plus MDA: frames per second acquired and restored, latency.

A Python camera (pymmcore-plus's pure-Python device layer) serves a real image (stardist's,
tiled to the frame size) with fresh Poisson noise, as fast as the engine asks (interval 0);
``runtime/mda.py`` writes raw frames to OME-Zarr in the acquisition thread and restores them in
its worker (default policy ``queue``). Reported per frame size and model: acquisition fps
(frames / time from the first to the last frame), restoration fps (frames / time from the first
frame to the last restored), latency p50/p99 (submit to restored), and the most the
acquisition thread was held per frame (our callback: the raw frame written to OME-Zarr, then
queued). The int8 model is made here from the shipped fp32 one (static quantisation calibrated
on tiles of the same image, as ``export --quantize int8`` does).

    python benchmarks/live_speed.py --sizes 512 2048 --frames 40 8
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import useq
from int8_recipes import cpu_flags  # benchmarks/ is on sys.path when run as a script
from pymmcore_plus.experimental.unicore import SimpleCameraDevice, UniMMCore
from zsdeconvnet.runtime.mda import MDARestoration
from zsdeconvnet.runtime.restorer import Restorer
from zsdeconvnet.training.sample_data import stardist_nuclei

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "nuclei2d.onnx"


class Camera(SimpleCameraDevice):
    def __init__(self, clean: np.ndarray):
        super().__init__()
        self.clean, self.rng, self.times = clean, np.random.default_rng(0), []

    def get_exposure(self) -> float:
        return 1.0

    def set_exposure(self, value: float) -> None:
        pass

    def sensor_shape(self):
        return self.clean.shape

    def dtype(self):
        return np.uint16

    def snap(self, buffer):
        buffer[:] = self.rng.poisson(self.clean) + 100
        self.times.append(time.perf_counter())
        return {}


def clean_image(size: int) -> np.ndarray:
    image = tifffile.imread(stardist_nuclei()).astype(np.float64)
    reps = -(-size // image.shape[0]), -(-size // image.shape[1])
    image = np.tile(image, reps)[:size, :size]
    return 20 * (image - image.min()) / np.ptp(image) + 2


def int8_model(folder: Path) -> Path:
    from zsdeconvnet.export.halo import add_effective_halo
    from zsdeconvnet.export.quantize import quantize_model
    from zsdeconvnet.runtime.model import Model

    image = tifffile.imread(stardist_nuclei()).astype(np.float32)
    recipe = Model(SHIPPED, provider="cpu").metadata.normalization
    lo, hi = np.percentile(image, [recipe.low, recipe.high])
    corners = ((0, 0), (256, 256), (0, 256), (256, 0))
    tiles = [((image[y : y + 256, x : x + 256] - lo) / (hi - lo))[None, None] for y, x in corners]
    out = folder / "nuclei2d_int8.onnx"
    quantize_model(SHIPPED, out, [t.astype(np.float32) for t in tiles], kind="int8")
    add_effective_halo(out, tiles[0][0, 0].astype(np.float32))  # as export does for int8
    return out


def run(model: Path, size: int, frames: int, folder: Path) -> dict:
    core = UniMMCore()
    camera = Camera(clean_image(size))
    core.loadPyDevice("Camera", camera)
    core.initializeDevice("Camera")
    core.setCameraDevice("Camera")
    core.setAutoShutter(False)
    restorer = Restorer(model)
    restorer.restore(camera.clean.astype(np.float32))  # load and plan before timing
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": frames})
    start = time.perf_counter()
    output = folder / f"{model.stem}_{size}"
    with MDARestoration(core, restorer, output) as live:
        core.mda.run(sequence)
    end = time.perf_counter()
    s = live.summary
    held = json.loads((output / "summary.json").read_text())["acquisition_held_ms_max"]
    acquired_s = camera.times[-1] - camera.times[0]
    return {
        "model": model.name,
        "size": size,
        "frames": frames,
        "acquired_fps": round((frames - 1) / acquired_s, 2) if acquired_s > 0 else None,
        "restored_fps": round(s.restored / (end - start), 3),
        "restore_ms_p50": round(s.percentile(s.restore_ms, 50), 1),
        "latency_ms_p50": round(s.percentile(s.latency_ms, 50), 1),
        "latency_ms_p99": round(s.percentile(s.latency_ms, 99), 1),
        "acquisition_held_ms_max": round(held, 2),  # raw write + queueing, per frame
        "restored": s.restored,
        "dropped": s.dropped,
    }


def main() -> None:
    logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)  # "no Micro-Manager found"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--frames", type=int, nargs="+", default=[40, 8])
    args = parser.parse_args()
    print(f"machine: {cpu_flags()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = [SHIPPED, int8_model(folder)]
        for size, frames in zip(args.sizes, args.frames):
            for model in models:
                print(json.dumps(run(model, size, frames, folder)), flush=True)


if __name__ == "__main__":
    main()
