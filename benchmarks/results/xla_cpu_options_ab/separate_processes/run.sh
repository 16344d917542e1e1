#!/usr/bin/env bash
# A/B/C of XLA CPU flags on ResNet-20's step (oneDNN kernels), two interleaved rounds.
cd "$(dirname "$0")/../../../.."
out=benchmarks/results/xla_cpu_options_ab/separate_processes
declare -A F=([a]="" [b]="--xla_cpu_prefer_vector_width=512" [c]="--xla_cpu_enable_concurrency_optimized_scheduler=false")
for r in 1 2; do
  for v in a b c; do
    XLA_FLAGS="${F[$v]}" python -m benchmarks.throughput --models=resnet --dtype=bfloat16,float32 --kernels=cpu_library --no_torch --steps=30 --out=$out/${v}_r$r.jsonl > $out/${v}_r$r.log 2>&1
  done
done
