#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent GPU machine (no network there: torch,
# onnx, scipy... come with its image; onnxruntime-gpu travels as pieces of a tarball).
#
#   bash benchmarks/gpu_session.sh PHASE...
#
# chunk  copy the pieces in .ortc/ (onnxruntime-gpu, split to fit one transfer) to /tmp/ortc
# speed  training speed on the GPU: 2D fast/paper (eager and torch.compile), 3D fast/paper
# sweep  start the 2D and 3D quality sweeps in the background (setsid): /tmp/sweep
# ort    join and unpack onnxruntime-gpu into /tmp/site, wait for the sweep, run gpu_speed.py
# mem3d  peak host memory of predict on a 200x1024x1024 stack with the CUDA provider
#        (a 3D model carried in .gpucarry/m3d.onnx); session 2 saw it pass 300 s: run it
#        alone, last, if at all
# pairs  2D training steps with pairs made by numpy on the host vs torch on the GPU
#        (pair_backend), fast and paper presets
# prior  continue the shipped 2D prior on the GPU for PRIOR_S seconds (default 420) at batch
#        PRIOR_BATCH (default 16): $OUT/prior_gpu.pt + card (the CPU simulates the acquisitions)
# collect  the sweep results into $OUT
#
# What is still owed (RESULTS.md): `bash benchmarks/gpu_session.sh chunk ort pairs` (the ort
# phase skips its wait when no sweep runs). `gpu_speed.py --tensorrt` adds the runtime on
# TensorRT where the machine has it (its engine build counts against the lease: run it last).
# Results land in $OUT (the device tool brings them back).
set -uo pipefail
OUT=${OUT:-/tmp/out}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$OUT" /tmp/pkg
ln -sfn "$ROOT" /tmp/pkg/zsdeconvnet  # the repository root is the package
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1
cd "$ROOT/benchmarks"

nvidia_libs() {  # CUDA/cuDNN libraries of the nvidia-* wheels beside torch
  python3 - <<'EOF'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    dirs.update(os.path.dirname(p) for p in glob.glob(f"{sp}/nvidia/**/lib/*.so*", recursive=True))
print(":".join(sorted(dirs)))
EOF
}

for phase in "$@"; do
  case $phase in
    chunk)
      mkdir -p /tmp/ortc && cp ../.ortc/part* /tmp/ortc/ && ls /tmp/ortc ;;
    speed)
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
        --format=csv | tee "$OUT/nvidia.txt"
      python3 train_speed.py --device cuda --steps 20 --json "$OUT/train2d.json" \
        2>&1 | tee "$OUT/train_speed_gpu.log"
      python3 train_speed.py --device cuda --mode 3d --steps 10 --json "$OUT/train3d.json" \
        2>&1 | tee -a "$OUT/train_speed_gpu.log"
      timeout 150 python3 train_speed.py --device cuda --steps 20 --presets paper --compile \
        --json "$OUT/train2d_compile.json" 2>&1 | grep -v "^W" | tee -a "$OUT/train_speed_gpu.log" ;;
    pairs)
      python3 train_speed.py --device cuda --steps 20 --compare-pairs \
        --json "$OUT/train2d_pairs.json" 2>&1 | tee "$OUT/train_pairs_gpu.log" ;;
    sweep)
      mkdir -p /tmp/sweep
      setsid nohup bash -c '
        python3 quality_sweep.py --device cuda --workers 12 -o /tmp/sweep/sweep2d.json \
          --variant base: \
          --variant hw005:hessian_weight=0.005 --variant hw002:hessian_weight=0.002 \
          --variant it4k:iterations=4000,hessian_weight=0.005 \
          --variant wide:base_channels=24,sr_channels=64,hessian_weight=0.005 \
          --cases filaments:25 mixed:25 beads:10 > /tmp/sweep/sweep2d.log 2>&1 &
        python3 quality_sweep.py --device cuda --workers 4 -o /tmp/sweep/sweep2d_low.json \
          --variant base: --variant hw005:hessian_weight=0.005 \
          --variant hw002:hessian_weight=0.002 \
          --cases filaments:5 mixed:5 > /tmp/sweep/sweep2d_low.log 2>&1 &
        python3 quality_sweep.py --mode 3d --device cuda --workers 6 -o /tmp/sweep/sweep3d.json \
          --variant base: --variant big:rcan_channels=16,ca_reduction=4,iterations=3000 \
          --cases filaments:5 beads:10 sheets:5 > /tmp/sweep/sweep3d.log 2>&1 &
        wait; touch /tmp/sweep/done' > /dev/null 2>&1 < /dev/null &
      sleep 2; echo "sweep started" ;;
    status)
      tail -n 3 /tmp/sweep/*.log; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv ;;
    ort)
      cat /tmp/ortc/part* > /tmp/ort.tar.xz && md5sum /tmp/ort.tar.xz
      rm -rf /tmp/site && mkdir -p /tmp/site
      python3 -c "import tarfile; tarfile.open('/tmp/ort.tar.xz').extractall('/tmp/site')"
      export PYTHONPATH=/tmp/site:/tmp/pkg LD_LIBRARY_PATH="$(nvidia_libs):${LD_LIBRARY_PATH:-}"
      python3 -c "import torch, onnxruntime as o; o.preload_dlls(); print(o.__version__, o.__file__)
s = o.InferenceSession('../models/nuclei2d.onnx', providers=['CUDAExecutionProvider'])
print('session providers', s.get_providers())"
      for _ in $(seq 36); do [ -f /tmp/sweep/done ] || [ ! -d /tmp/sweep ] && break; sleep 5; done
      if [ -d /tmp/sweep ] && [ ! -f /tmp/sweep/done ]; then  # timings need the GPU alone: stop the sweep
        echo "sweep stopped before the end (its finished rows are in the log)"
        pkill -f quality_sweep.py; pkill -f quality.py; pkill -f quality3d.py; sleep 3
      fi
      python3 gpu_speed.py --size 1024 --batches 1 2 --repeat 5 --json "$OUT/gpu_speed.json" \
        2>&1 | tee "$OUT/gpu_speed.log" ;;
    mem3d)
      export PYTHONPATH=/tmp/site:/tmp/pkg LD_LIBRARY_PATH="$(nvidia_libs):${LD_LIBRARY_PATH:-}"
      timeout 300 python3 memory_large.py ../.gpucarry/m3d.onnx --shape 200 1024 1024 \
        --provider cuda --workdir /tmp -- --tile 128 --tile-z 32 --batch 4 \
        2>&1 | tee "$OUT/memory3d_gpu.log" ;;
    prior)
      nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/nvidia.txt"
      python3 train_prior.py --device cuda --iterations 100000 --time-budget "${PRIOR_S:-420}" \
        --batch-size "${PRIOR_BATCH:-16}" --lr 1e-4 --seed 5 --run /tmp/prior_gpu \
        --start ../training/priors/prior2d_fast.pt --out "$OUT/prior_gpu.pt" \
        2>&1 | tr "\r" "\n" | tail -n 25 | tee "$OUT/train_prior_gpu.log" ;;
    collect)
      cp /tmp/sweep/*.json "$OUT/" 2>/dev/null
      cat /tmp/sweep/*.log > "$OUT/sweep.log" 2>/dev/null
      tail -n 80 "$OUT/sweep.log" ;;
    *) echo "unknown phase $phase"; exit 2 ;;
  esac
done
