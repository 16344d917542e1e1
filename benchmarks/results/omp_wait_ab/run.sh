#!/usr/bin/env bash
# PyTorch's OpenMP threads told to sleep at once after each parallel region (b_*:
# OMP_WAIT_POLICY=PASSIVE) against its default (a_*), processes alternating, ResNet-20 f32
# batch 500, eager PyTorch in the process; from the repository root, the machine otherwise
# idle (PERFORMANCE.md, section 17). Both sides' img/s, per run:
#   python -m benchmarks.throughput_ab --a='DIR/a_r*.jsonl' --b='DIR/b_r*.jsonl'   # JAX
#   grep -h -o '"torch_eager_images_per_sec": [0-9.]*' DIR/a_r*.jsonl DIR/b_r*.jsonl
dir=benchmarks/results/omp_wait_ab
for r in 1 2; do
  python -m benchmarks.throughput --models=resnet --dtype=float32 --batch=500 \
      --kernels=cpu_library --steps=20 --torch_modes=eager --out=$dir/a_r$r.jsonl
  OMP_WAIT_POLICY=PASSIVE python -m benchmarks.throughput --models=resnet --dtype=float32 \
      --batch=500 --kernels=cpu_library --steps=20 --torch_modes=eager --out=$dir/b_r$r.jsonl
done
# Then JAX alone (c_*) against JAX alone with torch imported first (d_*), alternating:
for r in 1 2; do
  python -m benchmarks.throughput --models=resnet --dtype=float32 --batch=500 \
      --kernels=cpu_library --steps=20 --no_torch --out=$dir/c_r$r.jsonl
  python -m benchmarks.results.omp_wait_ab.import_only --models=resnet --dtype=float32 \
      --batch=500 --kernels=cpu_library --steps=20 --no_torch --out=$dir/d_r$r.jsonl
done
