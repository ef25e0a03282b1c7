"""Runtime speed: onnxruntime vs the same network in torch eager, measured in one process.

Builds the fast-preset two-stage network (or loads a training checkpoint), exports it with the
project's exporter, and times one 1024x1024 frame (one tile, halo included, as the runtime runs
it) through: torch eager, torch eager channels_last, and the zsdeconvnet runtime (onnxruntime,
whole-frame normalisation, tiling, stitching). Prints seconds (median of --repeat) and ratios.

    python benchmarks/runtime_speed.py [--size 1024] [--checkpoint RUN_DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from zsdeconvnet.export.onnx import export_model
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.training.config import TrainConfig, preset
from zsdeconvnet.training.export_model import metadata_from_state
from zsdeconvnet.training.unet2d import ZSDeconvNet2D


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.checkpoint:
        import json

        from zsdeconvnet.training.trainer import load_checkpoint

        state = load_checkpoint(args.checkpoint)
        cfg = TrainConfig(**json.loads(state["config"]))
        net = ZSDeconvNet2D.from_config(cfg)
        net.load_state_dict(state["model"])
    else:
        cfg = preset("fast")
        torch.manual_seed(0)
        net = ZSDeconvNet2D.from_config(cfg)
        state = {"iteration": 0, "psf": torch.zeros(1, 1), "pixel_size_nm": 65.0}
    net.eval()
    meta = metadata_from_state(state, cfg)
    rng = np.random.default_rng(0)
    image = (100 + 50 * rng.random((args.size, args.size))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_model(net, meta, path, rng.random((1, 1, 64, 64), dtype=np.float32))
        predictor = Predictor(
            Model(path, provider="cpu"), PredictOptions(tile=None, progress=False)
        )
        tile = predictor.plan(image.shape).tile_shape
        x = torch.from_numpy(rng.random((1, 1, *tile), dtype=np.float32))

        def eager():
            with torch.no_grad():
                net(x)

        net_cl = ZSDeconvNet2D.from_config(cfg)
        net_cl.load_state_dict(net.state_dict())
        net_cl = net_cl.eval().to(memory_format=torch.channels_last)
        x_cl = x.to(memory_format=torch.channels_last)

        def eager_cl():
            with torch.no_grad():
                net_cl(x_cl)

        t_eager = timed(eager, args.repeat)
        t_cl = timed(eager_cl, args.repeat)
        t_rt = timed(lambda: predictor.predict_array(image), args.repeat)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"network: {cfg.preset} preset, {params:.2f} M parameters, halo {meta.halo[0]} px")
    print(f"image {args.size}x{args.size} (network input {tile[0]}x{tile[1]} with the halo)")
    print(f"torch eager               {t_eager:7.3f} s")
    print(f"torch eager channels_last {t_cl:7.3f} s")
    print(f"zsdeconvnet runtime (ORT) {t_rt:7.3f} s")
    print(f"ratio runtime vs eager: {t_eager / t_rt:.2f}x, vs channels_last: {t_cl / t_rt:.2f}x")


if __name__ == "__main__":
    main()
