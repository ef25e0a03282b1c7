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
from flops import conv_flops, matmul_peak  # benchmarks/ is on sys.path when run as a script
from zsdeconvnet.export.onnx import export_model
from zsdeconvnet.export.quantize import output_psnr, quantize_model
from zsdeconvnet.physics.optics import pupil_psf
from zsdeconvnet.physics.richardson_lucy import rl_iterates
from zsdeconvnet.runtime.model import Model
from zsdeconvnet.runtime.predict import PredictOptions, Predictor
from zsdeconvnet.training.config import TrainConfig, preset
from zsdeconvnet.training.networks import metadata_from_state
from zsdeconvnet.training.unet2d import ZSDeconvNet2D


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def network(checkpoint: Path | None, preset_name: str):
    """The 2D network of a training checkpoint, or He-initialised weights of a preset.

    Returns the network (eval mode not set), its config and a checkpoint-like state for the
    metadata.
    """
    if checkpoint:
        from zsdeconvnet.training.trainer import load_checkpoint

        state = load_checkpoint(checkpoint)
        cfg = TrainConfig.from_json(state["config"])
        net = ZSDeconvNet2D.from_config(cfg)
        net.load_state_dict(state["model"])
        return net, cfg, state
    cfg = preset(preset_name)
    torch.manual_seed(0)
    net = ZSDeconvNet2D.from_config(cfg)
    return net, cfg, {"iteration": 0, "psf": torch.zeros(1, 1), "pixel_size_nm": 65.0}


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
    parser.add_argument(
        "--image",
        type=Path,
        default=None,
        help="image to time on (tiled to --size); default: simulated",
    )
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    net, cfg, state = network(args.checkpoint, "fast")
    net.eval()
    meta = metadata_from_state(state, cfg)
    rng = np.random.default_rng(0)
    if args.image:
        import tifffile

        image = np.asarray(tifffile.imread(args.image), np.float32)
        reps = -(-args.size // min(image.shape))
        image = np.tile(image, (reps, reps))[: args.size, : args.size].copy()
    else:
        from zsdeconvnet.physics.simulate import SimulationConfig, simulate

        sim = simulate(SimulationConfig(structure="mixed", photons=10, size=args.size // 2))
        image = np.tile(sim["noisy"].astype(np.float32), (2, 2))
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
        _, fp32_out = predictor.predict_array(image)
        # int8: static QDQ calibrated on tiles of this image (what `export --quantize` does)
        lo, hi = np.percentile(image, [cfg.norm_low, cfg.norm_high])
        corners = range(0, args.size - 255, max(1, (args.size - 256) // 2))
        tiles = [
            ((image[y : y + 256, x : x + 256] - lo) / (hi - lo))[None, None]
            for y in corners
            for x in corners
        ]
        int8_path = Path(tmp) / "int8.onnx"
        quantize_model(path, int8_path, [t.astype(np.float32) for t in tiles], min_psnr=0)
        predictor8 = Predictor(Model(int8_path, provider="cpu"), predictor.options)
        t_int8 = timed(lambda: predictor8.predict_array(image), args.repeat)
        int8_psnr = output_psnr(fp32_out, predictor8.predict_array(image)[1])
        # classical baseline: Richardson-Lucy onto the 2x grid, 10 iterations
        psf_sr = pupil_psf(31, 32.5, 1.4, 525)[0]

        def rl():
            for _ in rl_iterates(image, psf_sr, background=100.0, max_iter=10):
                pass

        t_rl = timed(rl, 1)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    # achieved rate: the convolutions of one network input tile over the measured time, against
    # this machine's fp32 matrix-product rate measured now (torch, all cores)
    gflop = conv_flops(net, (1, 1, 64, 64)) * tile[0] * tile[1] / 64**2 / 1e9
    peak = matmul_peak("cpu", torch.float32, 2048) / 1e9
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"network: {cfg.preset} preset, {params:.2f} M parameters, halo {meta.halo[0]} px")
    print(f"image {args.size}x{args.size} (network input {tile[0]}x{tile[1]} with the halo)")
    print(f"torch eager               {t_eager:7.3f} s")
    print(f"torch eager channels_last {t_cl:7.3f} s")
    print(f"zsdeconvnet runtime (ORT) {t_rt:7.3f} s")
    print(
        f"zsdeconvnet runtime int8  {t_int8:7.3f} s  (deconvolved PSNR vs fp32 {int8_psnr:.1f} dB)"
    )
    print(f"Richardson-Lucy 10 it.    {t_rl:7.3f} s  (scipy FFT, 2x grid)")
    print(
        f"ratio runtime fp32 vs eager: {t_eager / t_rt:.2f}x, vs channels_last: {t_cl / t_rt:.2f}x"
    )
    print(
        f"achieved: {gflop:.0f} GFLOP per frame; fp32 matmul peak {peak:.0f} GFLOP/s; runtime fp32 "
        f"{gflop / t_rt:.0f} GFLOP/s ({100 * gflop / t_rt / peak:.0f} % of peak), int8 "
        f"{gflop / t_int8:.0f} GFLOP/s-equivalent, torch channels_last {gflop / t_cl:.0f} GFLOP/s"
    )
    print(
        f"ratio runtime int8 vs eager: {t_eager / t_int8:.2f}x, vs channels_last: "
        f"{t_cl / t_int8:.2f}x; vs RL(10 it.): {t_rl / t_int8:.2f}x"
    )


if __name__ == "__main__":
    main()
