"""GPU speed: the runtime (onnxruntime CUDA, fp32 and fp16, I/O binding) vs torch, one process.

The paper-size 2D network (``paper`` preset, He-initialised weights: speed does not depend on
the values) or a trained checkpoint is exported with the project's exporter (fp32, and fp16
through ``export --quantize fp16``'s converter), then timed on ``--size`` x ``--size`` images
in batches:

- torch eager on the GPU, channels_last, fp32 (TF32 off) and fp16;
- onnxruntime's CUDA provider, fp32 and fp16 models, inputs and outputs bound in GPU memory
  (I/O binding: what the network itself costs), default and NHWC convolution layout;
- the zsdeconvnet runtime end to end (``Predictor``: whole-frame normalisation, halo padding,
  host<->GPU copies, stitching) on whole frames;
- Richardson-Lucy, 10 iterations, on this machine's CPU (scipy), for the classical ratio.

Achieved TFLOP/s (convolutions counted by ``flops.conv_flops``) are put against the matrix
product rate measured in the same run. Times are medians of ``--repeat`` after warm-up.

    python benchmarks/gpu_speed.py [--size 1024] [--batches 1 4 8] [--json out.json]

Without a CUDA GPU it runs the same code on the CPU (torch CPU, onnxruntime CPU provider) as a
dry run of the script, so it is checked before a GPU is spent on it; those times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from flops import conv_flops, matmul_peak  # benchmarks/ is on sys.path when run as a script
from runtime_speed import network
from zsdeconvnet.export.onnx import export_model
from zsdeconvnet.export.quantize import output_psnr, quantize_model
from zsdeconvnet.training.networks import metadata_from_state
from zsdeconvnet.training.unet2d import ZSDeconvNet2D

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"


def sync() -> None:
    if GPU:
        torch.cuda.synchronize()


def cuda_timed(fn, repeat: int) -> float:
    """Median seconds of ``fn`` (GPU work synchronised before the clock is read)."""
    fn()
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ort_session(path: Path, nhwc: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not GPU:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    cuda = {"cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "1" if nhwc else "0"}
    session = ort.InferenceSession(
        str(path), options, providers=[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    )
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"CUDA provider did not load: {session.get_providers()}")
    return session


def ort_bound_runner(session, x: np.ndarray):
    """A callable running ``x`` with input and outputs in GPU memory (no host copies)."""
    import onnxruntime as ort

    binding = session.io_binding()
    binding.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(x, DEVICE, 0))
    for name in ("denoised", "deconvolved"):
        binding.bind_output(name, DEVICE)

    def run():
        session.run_with_iobinding(binding)

    return run, binding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=8, help="frames for the end-to-end run")
    parser.add_argument(
        "--tensorrt",
        action="store_true",
        help="also run the runtime end to end with --provider tensorrt (engine builds first)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import onnxruntime as ort

    if GPU and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels torch already uses
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(0) if GPU else "no GPU: CPU dry run, times meaningless"
    record: dict = {
        "gpu": gpu,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "size": args.size,
    }
    print(f"# {gpu}; torch {torch.__version__}; onnxruntime {ort.__version__}", flush=True)
    n = 8192 if GPU else 512
    peaks = {
        "fp32": matmul_peak(DEVICE, torch.float32, n),
        "fp16": matmul_peak(DEVICE, torch.float16 if GPU else torch.bfloat16, n),
    }
    record["matmul_peak_tflops"] = {k: round(v / 1e12, 1) for k, v in peaks.items()}
    print(f"matmul peak (TFLOP/s): {record['matmul_peak_tflops']}", flush=True)

    net, cfg, state = network(args.checkpoint, args.preset)
    net.eval()
    meta = metadata_from_state(state, cfg)
    s = args.size
    flops = conv_flops(net, (1, 1, 64, 64)) * (s / 64) ** 2
    params = sum(p.numel() for p in net.parameters()) / 1e6
    record.update(network=f"{cfg.preset} preset", params_m=round(params, 2), gflop=flops / 1e9)
    print(f"network: {cfg.preset}, {params:.2f} M params, {flops / 1e9:.0f} GFLOP per {s}^2 image")

    from zsdeconvnet.physics.simulate import SimulationConfig, simulate

    sim = simulate(SimulationConfig(structure="mixed", photons=10, size=s // 2, seed=0))
    frame = np.tile(sim["noisy"].astype(np.float32), (2, 2))
    lo, hi = np.percentile(frame, [cfg.norm_low, cfg.norm_high])
    normalised = ((frame - lo) / (hi - lo)).astype(np.float32)
    rows = []

    def add(method: str, batch: int, seconds: float, note: str = "") -> None:
        per_image = seconds / batch
        rate = flops / per_image / 1e12
        rows.append(
            {"method": method, "batch": batch, "ms_per_image": 1000 * per_image, "tflops": rate}
        )
        print(
            f"{method:34s} batch {batch:2d}: {1000 * per_image:8.2f} ms/image "
            f"{rate:6.1f} TFLOP/s {note}",
            flush=True,
        )

    # torch eager on the GPU
    gnet = ZSDeconvNet2D.from_config(cfg)
    gnet.load_state_dict(net.state_dict())
    gnet = gnet.eval().to(DEVICE).to(memory_format=torch.channels_last)
    low = torch.float16 if GPU else torch.bfloat16
    for dtype in (torch.float32, low):
        model = gnet.to(dtype)
        label = f"torch eager {str(dtype)[6:]} channels_last"
        for b in args.batches:
            x = torch.from_numpy(np.stack([normalised] * b)[:, None]).to(DEVICE)
            x = x.to(dtype).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                add(label, b, cuda_timed(lambda model=model, x=x: model(x), args.repeat))
            del x
    del gnet, model
    if GPU:
        torch.cuda.empty_cache()

    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        fp16_path = Path(tmp) / "fp16.onnx"
        crop = normalised[None, None, :128, :128].copy()
        export_model(net, meta, fp32_path, crop)
        tiles = [normalised[None, None, y : y + 128, :128].copy() for y in (0, s - 128)]
        scores = quantize_model(fp32_path, fp16_path, tiles, min_psnr=0, kind="fp16")
        record["fp16_gate_psnr_db_cpu"] = scores
        outputs = {}
        for path, precision in ((fp32_path, "fp32"), (fp16_path, "fp16")):
            for nhwc in (False, True):
                try:
                    session = ort_session(path, nhwc)
                except Exception as err:  # an option this build lacks: say so, go on
                    print(f"{precision} nhwc={nhwc}: no session ({str(err)[:200]})")
                    continue
                layout = " NHWC" if nhwc else ""
                label = f"onnxruntime {'CUDA' if GPU else 'CPU'} {precision}{layout} bound"
                for b in args.batches:
                    x = np.ascontiguousarray(np.stack([normalised] * b)[:, None])
                    run, binding = ort_bound_runner(session, x)
                    try:
                        add(label, b, cuda_timed(run, args.repeat))
                    except Exception as err:  # e.g. cuDNN's 2^31-element limit: say so, go on
                        print(f"{label} batch {b}: failed ({str(err).splitlines()[0][:160]})")
                        continue
                    if b == 1 and not nhwc:
                        outputs[precision] = binding.copy_outputs_to_cpu()[1][0, 0]
                    del binding
                x1 = normalised[None, None]
                add(
                    label.replace("bound", "numpy in/out"),
                    1,
                    cuda_timed(lambda s=session, x1=x1: s.run(None, {"input": x1}), args.repeat),
                )
                del session
        record["fp16_vs_fp32_psnr_db"] = output_psnr(outputs["fp32"], outputs["fp16"])
        print(f"fp16 vs fp32 (deconvolved, {DEVICE}): {record['fp16_vs_fp32_psnr_db']:.1f} dB")

        # the zsdeconvnet runtime end to end, whole frames
        from zsdeconvnet.runtime.model import Model
        from zsdeconvnet.runtime.predict import PredictOptions, Predictor

        stack = [np.roll(frame, 7 * k, axis=1) for k in range(args.frames)]
        runs = [(fp32_path, "fp32", "cuda"), (fp16_path, "fp16", "cuda")]
        if args.tensorrt and "TensorrtExecutionProvider" in ort.get_available_providers():
            runs.append((fp16_path, "fp16", "tensorrt"))
        elif args.tensorrt:
            print("tensorrt: this onnxruntime has no TensorRT provider (not measured)")
        for path, precision, provider in runs:
            start = time.perf_counter()
            model = Model(path, provider=provider if GPU else "cpu", io_binding=True)
            predictor = Predictor(model, PredictOptions(tile=None, progress=False))
            tile = predictor.plan(frame.shape).tile_shape

            def run_all(predictor=predictor):
                for f in stack:
                    predictor.predict_array(f)

            predictor.predict_array(frame)  # TensorRT builds its engine here
            ready = time.perf_counter() - start
            seconds = cuda_timed(run_all, max(2, args.repeat // 4))
            add(
                f"zsdeconvnet runtime {precision} {model.active_provider[:-17]} (end to end)",
                len(stack),
                seconds,
                f"(network input {tile[0]}x{tile[1]} with the halo; load + first frame "
                f"{ready:.1f} s)",
            )
    # Richardson-Lucy on this machine's CPU, 10 iterations onto the 2x grid
    from zsdeconvnet.physics.optics import pupil_psf
    from zsdeconvnet.physics.richardson_lucy import rl_iterates

    psf_sr = pupil_psf(31, 32.5, 1.4, 525)[0]
    start = time.perf_counter()
    for _ in rl_iterates(frame, psf_sr, background=100.0, max_iter=10):
        pass
    record["rl10_cpu_seconds"] = time.perf_counter() - start
    print(f"Richardson-Lucy 10 it. (CPU, scipy): {record['rl10_cpu_seconds']:.3f} s")
    record["rows"] = rows
    best = min(rows, key=lambda r: r["ms_per_image"])
    print(f"fastest: {best['method']} batch {best['batch']}: {best['ms_per_image']:.2f} ms/image")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1, default=float))


if __name__ == "__main__":
    main()
