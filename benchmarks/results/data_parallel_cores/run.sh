#!/usr/bin/env bash
# Every row of the A/B, one process each, raw lines to ab.jsonl (TBB_INCLUDE: see ab.py).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export XLA_FLAGS=--xla_force_host_platform_device_count=2
for model in resnet rir; do
  for dtype in float32 bfloat16; do
    for batch in 128 500; do
      for cap in "" 1; do
        python -m benchmarks.results.data_parallel_cores.ab "$model" "$dtype" "$batch" 12 $cap \
          2>/dev/null | tail -1 >> benchmarks/results/data_parallel_cores/ab.jsonl
      done
    done
  done
done
