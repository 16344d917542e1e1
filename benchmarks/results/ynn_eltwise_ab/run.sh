#!/usr/bin/env bash
# A/B of XLA's elementwise fusions on YNNPACK (b_*) against XLA's default (a_*), runs
# interleaved; from the repository root. Stopped after a_r2's ResNet-20 rows (PERFORMANCE.md,
# section 7). Table: python -m benchmarks.throughput_ab --a='DIR/a_r*.jsonl' --b='DIR/b_r*.jsonl'
dir=benchmarks/results/ynn_eltwise_ab
for r in 1 2; do
  XLA_FLAGS= python -m benchmarks.throughput --models=resnet,rir --dtype=bfloat16,float32 \
      --kernels=cpu_library --no_torch --steps=30 --out=$dir/a_r$r.jsonl
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+eltwise python -m benchmarks.throughput \
      --models=resnet,rir --dtype=bfloat16,float32 --kernels=cpu_library --no_torch --steps=30 \
      --out=$dir/b_r$r.jsonl
done
