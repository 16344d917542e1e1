#!/usr/bin/env bash
# The GPU measurements of the paper table and the performance work, prepared for a lent
# GPU machine (its image: Python 3.12 with jax[cuda] 0.11, flax, optax, orbax and torch;
# no internet). Prepare here first: `bash benchmarks/gpu_wheels.sh` (wheels in .whl/, the JPEG
# CIFAR-10 files in .gpu_data/); on that machine, with .whl and .gpu_data carried along:
#   bash benchmarks/gpu_check.sh OUT paper            # the RiR row, full recipe (<= 9 min)
#   bash benchmarks/gpu_check.sh OUT dispatch,speed   # the A/B, then img/s and MFU (<= 9 min)
# (one device command may run 10 minutes: hence two calls; the limits are the stages'). Each stage has its own time limit,
# so a slow one cannot starve the rest; all output lands in OUT (stage logs, JSON lines,
# the paper row's results). SMOKE=1 runs the stages for a few steps on synthetic images:
# the check of this script on a CPU (tests/test_gpu_script.py).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: gpu_check.sh OUT paper|dispatch|speed[,...]}"
stages=",${2:?usage: gpu_check.sh OUT paper|dispatch|speed[,...]},"
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/rir_jax_site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/rir_jax_site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1

stage() {  # stage NAME SECONDS COMMAND...: runs it under a limit, its output in OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start))s"
  tail -n 15 "$out/$name.log"
}

(nvidia-smi || true) > "$out/device.txt" 2>&1
python3 -c "import jax, flax, optax; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())" \
  >> "$out/device.txt" 2>&1
cat "$out/device.txt"

if [ "${SMOKE:-0}" = 1 ]; then
  paper=(--smoke)
  ab=(--steps=8 --log_every=4 --rounds=1 --config.batch_size=16 --config.eval_batch_size=64)
  speed=(--models=resnet --batch=32 --steps=3 --warmup=1 --torch_modes=eager)
else
  paper=(--dataset=cifar10_jpeg --manual_dir=.gpu_data/cifar10_jpeg)
  ab=(--steps=400 --log_every=100 --rounds=1 --config.batch_size=500)
  speed=(--models=rir_paper,resnet --batch=500 --steps=30 --warmup=5 --torch_modes=eager,compile)
fi

# The paper's RiR row at its full recipe (82 epochs, batch 500, bf16): about 4 minutes of
# steps at the H100's measured 20,234 img/s.
if [[ $stages == *,paper,* ]]; then
  stage paper_rir 540 python3 -m benchmarks.paper --scale=paper --rows=rir --seeds=1 \
    "${paper[@]}" --out="$out/paper_gpu"
fi
# Steps per dispatch, A/B on the paper's model.
if [[ $stages == *,dispatch,* ]]; then
  stage dispatch_ab 200 python3 -m benchmarks.dispatch_ab --config=configs/rir_cifar.py \
    --config.data.name=synthetic --config.dtype=bfloat16 --steps_per_dispatch=1,8 "${ab[@]}" \
    --out="$out/dispatch_ab_gpu.jsonl"
fi
# Training speed and MFU against PyTorch, eager and compiled.
if [[ $stages == *,speed,* ]]; then
  stage throughput 330 python3 -m benchmarks.throughput --dtype=bfloat16,float32 --kernels=xla \
    "${speed[@]}" --out="$out/throughput_gpu.jsonl"
fi
