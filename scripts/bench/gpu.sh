#!/usr/bin/env bash
# The GPU benchmarks of the issues' speed targets, in one script sized for a short lease of one GPU.
#
#   bash scripts/bench/gpu.sh OUT [backprop|perturbation|all]
#
# OUT receives every table (.md) and row file (.json) as soon as each is measured, and log.txt; a stage stopped
# by its time limit keeps what it wrote. "all" runs perturbation first (issue 5's remaining targets are GPU-only).
# Stages:
#   backprop:      bench_backprop.py, full and small C3D at batch 1 and 8, every method against captum / zennit
#                  with the PyTorch twin on the same GPU (targets: gradient <= 3.5x forward, deep Taylor <= 4.5x,
#                  every method faster than its peer); then the full C3D with JAXVX_CONV=rewrite (the
#                  CPU's fallback convolution form) against the native 3D convolutions used on GPUs, and bench_convs.py
#                  (C3D's convolutions one by one against PyTorch's); then bench_i3d.py, the Kinetics-400 I3D at
#                  16 x 224 x 224, batch 1 and 8, against zennit / captum on its PyTorch twin (same GPU)
#   perturbation:  bench_tsr.py with the paper's 10 x 10 blocks (2047 base calls, jaxvx timed on all of them,
#                  the loops on 256 and scaled; target: >= 20x faster than loop (a), seconds per video), then
#                  bench_extremal.py, EP-3D and STEP on the full R(2+1)D-18 at 16 x 112 x 112, 4 areas, all 1000
#                  iterations in one lax.scan (target: < 30 s per clip)
#
# Needs: jax with a GPU backend, flax, optax, torch with CUDA, captum, zennit, torchray (scripts/install_peers.sh
# or wheels) and this checkout on PYTHONPATH (or installed). Time limits per stage: PERTURBATION_S (default 420)
# and BACKPROP_S (default 360) seconds; with a 15-minute lease, run the two stages as two calls. Set
# GPU_BENCH_ALLOW_CPU=1 to run it without a GPU (a smoke test: slow).
set -uo pipefail
out=${1:?usage: bash scripts/bench/gpu.sh OUT [backprop|perturbation|all]}
stage=${2:-all}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$here/../..${PYTHONPATH:+:$PYTHONPATH}"
log="$out/log.txt"

backend=$(python3 -c 'import jax; print(jax.default_backend())' 2>>"$log") || { echo "jax does not import" | tee -a "$log"; exit 2; }
if [[ "$backend" != "gpu" && "${GPU_BENCH_ALLOW_CPU:-0}" != "1" ]]; then
  echo "jax's default backend is '$backend', not 'gpu': install jax for your accelerator (or set GPU_BENCH_ALLOW_CPU=1)" | tee -a "$log"
  exit 2
fi
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null;
  python3 -c 'import jax, torch; print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__, torch.cuda.is_available())'; } 2>&1 | tee -a "$log"

status=0
run_stage() {  # name, seconds, command...
  local name=$1 secs=$2; shift 2
  echo "== $name (limit ${secs}s): $*" | tee -a "$log"
  local t0=$SECONDS
  timeout "$secs" "$@" > >(tee "$out/$name.md") 2> >(tee -a "$log" >&2)
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
  [[ $rc -eq 0 ]] || status=1
}

if [[ "$stage" == perturbation || "$stage" == all ]]; then
  budget=${PERTURBATION_S:-420}
  t0=$SECONDS
  run_stage tsr "$budget" python3 "$here/bench_tsr.py" --block 10 --loop-masks 256 --rounds 1 --batch-size 64 \
    --json "$out/tsr.json"
  left=$((budget - (SECONDS - t0)))
  if (( left > 30 )); then
    run_stage extremal "$left" python3 "$here/bench_extremal.py" --model r2plus1d --width 1 --iters 1000 \
      --torch-iters 20 --loops scan --methods ep3d step --json "$out/extremal.json"
  fi
fi
if [[ "$stage" == backprop || "$stage" == all ]]; then
  budget=${BACKPROP_S:-360}
  t0=$SECONDS
  run_stage backprop_full "$budget" python3 "$here/bench_backprop.py" --sizes full --batches 1 8 --repeats 5 \
    --json "$out/backprop_full.json"
  left=$((budget - (SECONDS - t0)))
  if (( left > 30 )); then
    run_stage backprop_small "$left" python3 "$here/bench_backprop.py" --sizes small --batches 1 8 --repeats 5 \
      --json "$out/backprop_small.json"
  fi
  left=$((budget - (SECONDS - t0)))
  if (( left > 30 )); then  # the CPU's 3D-as-2D convolution rewrite on this GPU, against the native convolutions
    JAXVX_CONV=rewrite run_stage backprop_rewrite "$left" python3 "$here/bench_backprop.py" --sizes full \
      --batches 8 --methods gradient deep_taylor --no-peers --repeats 5 --json "$out/backprop_rewrite.json"
  fi
  left=$((budget - (SECONDS - t0)))
  if (( left > 20 )); then  # C3D's convolutions one by one: XLA's against cuDNN's through PyTorch
    run_stage convs "$left" python3 "$here/bench_convs.py" --width 1 --batch 8 --repeats 5 --json "$out/convs.json"
  fi
  left=$((budget - (SECONDS - t0)))
  if (( left > 30 )); then  # the real model: needs the i3d extra (its weights are converted on first use)
    run_stage i3d "$left" python3 "$here/bench_i3d.py" --batches 1 8 --repeats 3 --json "$out/i3d.json"
  fi
fi
exit $status
