#!/usr/bin/env bash
# Interleaved A/B of oneDNN 3.2's threading runtime under the project's kernel library:
# the TBB build (the `onednn` extra, this environment's python: A, tbb_r*) against the GNU
# OpenMP build (B, gomp_r*) in a virtual environment made by
#   python -m venv --system-site-packages VENV
#   VENV/bin/pip install "onednn-cpu-gomp==2023.2.*" "onednn-devel-cpu-gomp==2023.2.*"
# Usage, from the repository root: bash benchmarks/results/onednn_runtime_ab/run.sh VENV
# (a venv on pyenv's Python may need LD_LIBRARY_PATH to name that Python's lib folder).
# Table: python -m benchmarks.throughput_ab --a='DIR/tbb_r*.jsonl' --b='DIR/gomp_r*.jsonl'
venv=$1
out=benchmarks/results/onednn_runtime_ab
for round in 1 2; do
  for env in tbb gomp; do
    if [ $env = tbb ]; then py=python; else py=$venv/bin/python; fi
    OMP_WAIT_POLICY=passive $py -m benchmarks.throughput --models=resnet,rir \
      --dtype=bfloat16,float32 --kernels=cpu_library --no_torch --steps=20 --eval_batch=256 \
      --out=$out/${env}_r${round}.jsonl
  done
done
