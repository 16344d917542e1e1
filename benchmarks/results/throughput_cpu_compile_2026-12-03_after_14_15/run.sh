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
# Then a JAX-only check of RiR bf16, 4 KB pages (a) against huge pages (b), alternating:
#   for r in 1 2; do
#     GLIBC_TUNABLES=glibc.malloc.hugetlb=0 python -m benchmarks.throughput --models=rir \
#       --dtype=bfloat16 --kernels=cpu_library --steps=30 --no_torch --out=$out/rir_bf16_check_a_r$r.jsonl
#     python -m benchmarks.throughput --models=rir --dtype=bfloat16 --kernels=cpu_library \
#       --steps=30 --no_torch --out=$out/rir_bf16_check_b_r$r.jsonl
#   done
