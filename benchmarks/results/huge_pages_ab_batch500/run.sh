#!/usr/bin/env bash
# Batch 500, ResNet-20 f32: malloc on 4 KB pages (a_*: GLIBC_TUNABLES=glibc.malloc.hugetlb=0,
# so no restart) against huge pages (b_*: the default), processes alternating; from the
# repository root, the machine otherwise idle (PERFORMANCE.md, section 17). Table:
#   python -m benchmarks.throughput_ab --a='DIR/a_r*.jsonl' --b='DIR/b_r*.jsonl'
dir=benchmarks/results/huge_pages_ab_batch500
for r in 1 2 3; do
  GLIBC_TUNABLES=glibc.malloc.hugetlb=0 python -m benchmarks.throughput --models=resnet \
      --dtype=float32 --batch=500 --kernels=cpu_library --steps=20 --no_torch --out=$dir/a_r$r.jsonl
  python -m benchmarks.throughput --models=resnet --dtype=float32 --batch=500 \
      --kernels=cpu_library --steps=20 --no_torch --out=$dir/b_r$r.jsonl
done
