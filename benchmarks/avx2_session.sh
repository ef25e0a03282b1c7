#!/usr/bin/env bash
# The measurements owed to the CPU kind without native bf16 (AVX2 + FMA, no AVX-512), as one
# prepared script: start it in the first minutes of a session on that kind, alone on the CPU.
#
#   nohup bash benchmarks/avx2_session.sh budget demo table halo > /dev/null 2>&1 &
#
# budget `train --time-budget 180` from the prior on stardist's image (the README's command:
#        iterations chosen, seconds trained, the whole command's wall time;
#        results/time_budget_180_prior_stardist_avx2.log). About 3.5 min
# demo   `make demo` in a clean clone of this checkout's HEAD, install included, timed
#        (results/make_demo_avx2.log). About 2.5 min
# table  the priors issue's time-to-quality table: scratch `fast` against the shipped prior +
#        fine-tuning at 60, 180 and 600 s on the five simulator cases, then the two
#        generalisation cases at 180 s (raw and RL at its oracle count beside each). About 2.6 h
#        of training; rows land in results/prior_vs_scratch_table_avx2.jsonl as they finish and
#        a second run of this phase skips the rows already there (same CPU), so a session that
#        ends mid-table is continued by the next one on this kind.
# halo   stage by stage against the exact and the one-pass effective halo, 1024^2 frame, tiles
#        256 / 512 / 1024, the shipped model (results/halo_speed_staged_avx2.log)
#
# Refuses to run on a CPU with avx512_bf16 (the table's budgets mean nothing there) unless
# FORCE=1. Logs go to benchmarks/results/*_avx2.log (appended, one header line per run).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
RES="${RES:-$ROOT/benchmarks/results}"  # RES=DIR: logs elsewhere (a dry run)
cd "$ROOT/benchmarks"

if grep -qw avx512_bf16 /proc/cpuinfo && [ "${FORCE:-0}" != 1 ]; then
  echo "avx2_session.sh: this CPU has avx512_bf16; these budgets are for the AVX2-only kind (FORCE=1 to run anyway)" >&2
  exit 2
fi

header() {  # one line naming the session, the command and the CPU
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) avx2_session.sh $1: $(lscpu | grep 'Model name' | cut -d: -f2 | xargs), $(nproc) cores" >> "$2"
}

for phase in "$@"; do
  case "$phase" in
    table)
      log="$RES/prior_vs_scratch_table_avx2.log"
      rows="$RES/prior_vs_scratch_table_avx2.jsonl"
      header table "$log"
      "$PY" prior_vs_scratch.py --cases filaments:5 filaments:25 mixed:5 mixed:25 beads:10 \
        --budgets 60 180 600 --inits scratch prior --jsonl "$rows" >> "$log" 2>&1
      "$PY" prior_vs_scratch.py --cases membranes:10 mixed:10:edge \
        --budgets 180 --inits scratch prior --jsonl "$rows" >> "$log" 2>&1
      ;;
    budget)
      log="$RES/time_budget_180_prior_stardist_avx2.log"
      header budget "$log"
      work="$(mktemp -d)"
      cp "$("$PY" -c 'from zsdeconvnet.training.sample_data import stardist_nuclei as s; print(s())')" "$work/nuclei.tif"
      (
        cd "$work" && "$ROOT/.venv/bin/zsdeconvnet" psf -o psf.tif --na 0.75 --wavelength 460 --pixel-size 325 &&
          /usr/bin/time -f "wall %e s, max RSS %M kB" "$ROOT/.venv/bin/zsdeconvnet" train nuclei.tif \
            --psf psf.tif --pixel-size 325 -o m.onnx --time-budget 180 --quiet &&
          echo "last loss.csv row (iteration, ..., seconds): $(tail -1 m_training/loss.csv)"
      ) >> "$log" 2>&1
      rm -rf "$work"
      ;;
    demo)
      log="$RES/make_demo_avx2.log"
      header demo "$log"
      work="$(mktemp -d)"
      git clone -q "$ROOT" "$work/clone"
      (cd "$work/clone" && /usr/bin/time -f "make demo: wall %e s" make demo 2>&1 | tr '\r' '\n' |
        grep -v -E '^(train|predict|ok):' ) >> "$log" 2>&1
      rm -rf "$work"
      ;;
    halo)
      log="$RES/halo_speed_staged_avx2.log"
      header halo "$log"
      "$PY" halo_speed.py --model "$ROOT/models/nuclei2d.onnx" --tiles 256 512 1024 >> "$log" 2>&1
      ;;
    *)
      echo "avx2_session.sh: unknown phase '$phase' (budget, demo, table, halo)" >&2
      exit 2
      ;;
  esac
done
