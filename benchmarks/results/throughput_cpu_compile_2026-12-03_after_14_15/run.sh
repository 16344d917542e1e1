#!/usr/bin/env bash
# Two runs of the CPU speed table at batch 128, both PyTorch modes (torch==2.13.0 installed),
# the machine otherwise idle, with PERFORMANCE.md sections 14 and 15 in (the batch-norm fence;
# throughput.py restarts with malloc on huge pages). From the repository root:
#   bash benchmarks/results/throughput_cpu_compile_2026-12-03_after_14_15/run.sh
out=benchmarks/results/throughput_cpu_compile_2026-12-03_after_14_15
for r in 1 2; do
  python -m benchmarks.throughput --models=resnet,rir --dtype=float32,bfloat16 \
    --kernels=cpu_library --steps=30 --out=$out/r$r.jsonl
done
