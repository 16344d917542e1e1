"""throughput.py's JAX side alone (--no_torch), with torch imported first (and nothing else
of it run): does PyTorch's presence alone slow JAX's step? (PERFORMANCE.md, section 17.)

  python -m benchmarks.results.omp_wait_ab.import_only --models=resnet --dtype=float32 \
      --batch=500 --kernels=cpu_library --steps=20 --no_torch --out=FILE
"""
from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # as throughput.py does, first

import sys

import torch  # noqa: F401, E402 - imported for its side effects alone

from benchmarks import throughput  # noqa: E402

if __name__ == "__main__":
  sys.exit(throughput.main(sys.argv[1:]))
