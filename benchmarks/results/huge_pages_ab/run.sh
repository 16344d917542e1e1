#!/usr/bin/env bash
# Malloc on 4 KB pages (a_*: GLIBC_TUNABLES=glibc.malloc.hugetlb=0, so no restart) against
# huge pages (b_*: the default, rir_jax/host_memory.py restarts with glibc.malloc.hugetlb=1),
# processes alternating; from the repository root, the machine otherwise idle
# (PERFORMANCE.md, section 15). Table:
#   python -m benchmarks.throughput_ab --a='DIR/a_r*.jsonl' --b='DIR/b_r*.jsonl'
# The other sets were run the same way: first_*: --models=resnet,rir --dtype=bfloat16
# --steps=30, 4 rounds; torch_*: --dtype=float32,bfloat16 --models=resnet,rir --steps=30
# with both PyTorch modes (torch==2.13.0 installed), 2 rounds.
dir=benchmarks/results/huge_pages_ab
for r in 1 2 3 4 5 6; do
  GLIBC_TUNABLES=glibc.malloc.hugetlb=0 python -m benchmarks.throughput --models=resnet \
      --dtype=bfloat16,float32 --kernels=cpu_library --steps=40 --no_torch --out=$dir/a_r$r.jsonl
  python -m benchmarks.throughput --models=resnet --dtype=bfloat16,float32 \
      --kernels=cpu_library --steps=40 --no_torch --out=$dir/b_r$r.jsonl
done
