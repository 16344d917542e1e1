#!/usr/bin/env bash
# Interleaved A/B: the project's kernel library on oneDNN 3.2 (onednn-cpu-tbb 2023.2, the
# `onednn` extra) vs 3.13 (PyPI onednn 2026.1, SYCL build), ResNet-20 and RiR, f32 and bf16.
cd /work/main
OUT=/work/scratch/ab313
for round in 1 2; do
  for env in v3.2 v3.13; do
    if [ $env = v3.2 ]; then PY=python; else PY=/work/scratch/venv_new/bin/python; fi
    LD_LIBRARY_PATH=/root/.pyenv/versions/3.11.7/lib $PY -m benchmarks.throughput --models=resnet,rir \
      --dtype=float32,bfloat16 --kernels=cpu_library --no_torch --steps=30 \
      --out=$OUT/${env}_r${round}.jsonl > $OUT/${env}_r${round}.log 2>&1
  done
done
echo done > $OUT/finished
