"""onnxruntime session options, tile and batch sizes on the CPU, measured on a trained model.

Times one 1024x1024 frame through the runtime (``Predictor``: normalisation, tiling,
stitching) for each choice, all in one run, and the start-up cost of graph optimisation
against loading a saved, already optimised model:

- graph optimisation level (basic, extended, all), CPU memory arena on/off, intra-op threads,
  and onnxruntime's memory pattern (off in the runtime) turned back on;
- tile size (256, 512, 1024, whole frame) and tiles per call (batch 1, 2, 4).

    python benchmarks/session_options.py [--model models/nuclei2d.onnx] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from runtime_speed import cpu_name  # benchmarks/ is on sys.path when run as a script
from runtime_speed import timed as median_time
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor

ROOT = Path(__file__).resolve().parent.parent
LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(
    path: Path,
    level: str = "all",
    arena: bool = True,
    threads: int = 0,
    save=None,
    pattern: bool = False,
):
    options = ort.SessionOptions()
    options.enable_mem_pattern = pattern
    options.graph_optimization_level = (
        LEVELS[level] if level != "none" else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.enable_cpu_mem_arena = arena
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if save:
        options.optimized_model_filepath = str(save)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "nuclei2d.onnx")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from zsdeconvnet.physics.simulate import SimulationConfig, simulate

    sim = simulate(SimulationConfig(structure="mixed", photons=10, size=args.size // 2))
    frame = np.tile(sim["noisy"].astype(np.float32), (2, 2))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}")
    print(f"model {args.model.name}, frame {args.size}x{args.size}, median of {args.repeat}")

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "optimised.onnx"
        session(args.model, save=saved)
        t_opt = median_time(lambda: session(args.model), 5)
        t_saved = median_time(lambda: session(saved, level="none"), 5)
    print(
        f"start-up: optimise on load {1000 * t_opt:.0f} ms, load a saved optimised model "
        f"{1000 * t_saved:.0f} ms"
    )

    model = Model(args.model, provider="cpu")
    reference = None
    print(f"{'choice':42s} {'s / frame':>9s}")
    for level in LEVELS:
        for arena in (True, False):
            for threads in (1, 0):
                model.session = session(args.model, level, arena, threads)
                predictor = Predictor(model, PredictOptions(tile=None, progress=False))
                seconds = median_time(lambda p=predictor: p.predict_array(frame), args.repeat)
                out = predictor.predict_array(frame)[1]
                reference = out if reference is None else reference
                same = np.abs(out - reference).max() <= 1e-3 * np.abs(reference).max()
                label = f"level {level}, arena {'on' if arena else 'off'}, "
                label += f"threads {threads or 'all'}"
                print(f"{label:42s} {seconds:9.3f}{'' if same else '  (output differs!)'}")
    model.session = session(args.model, pattern=True)
    predictor = Predictor(model, PredictOptions(tile=None, progress=False))
    seconds = median_time(lambda p=predictor: p.predict_array(frame), args.repeat)
    print(f"{'level all, arena on, memory pattern on':42s} {seconds:9.3f}")
    model.session = session(args.model)
    for tile in (256, 512, 1024, None):
        for batch in (1, 2, 4):
            if tile is None and batch > 1:
                continue
            predictor = Predictor(model, PredictOptions(tile=tile, batch=batch, progress=False))
            plan = predictor.plan(frame.shape)
            seconds = median_time(lambda p=predictor: p.predict_array(frame), args.repeat)
            tiles = f"{len(plan.tiles)} x {plan.tile_shape[0]}^2"
            label = f"tile {tile or 'whole'} ({tiles}), batch {batch}"
            print(f"{label:42s} {seconds:9.3f}")


if __name__ == "__main__":
    main()
