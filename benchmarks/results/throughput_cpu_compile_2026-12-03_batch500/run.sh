#!/usr/bin/env bash
# Two runs of the CPU speed table at batch 500, both PyTorch modes (torch==2.13.0 installed),
# the machine otherwise idle, with PERFORMANCE.md sections 14 and 15 in. From the
# repository root:
#   bash benchmarks/results/throughput_cpu_compile_2026-12-03_batch500/run.sh
out=benchmarks/results/throughput_cpu_compile_2026-12-03_batch500
for r in 1 2; do
  python -m benchmarks.throughput --models=resnet,rir --dtype=float32,bfloat16 --batch=500 \
    --kernels=cpu_library --steps=30 --out=$out/r$r.jsonl
done
# Run 1's ResNet-20 float32 row shared the CPUs with unit tests (17.7% used by others);
# it was run again alone, right after the huge-pages check of PERFORMANCE.md section 17:
#   python -m benchmarks.throughput --models=resnet --dtype=float32 --batch=500 \
#     --kernels=cpu_library --steps=30 --out=$out/r1_resnet_float32_again.jsonl
