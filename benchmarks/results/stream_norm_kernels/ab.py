"""RiR's stream batch norms on the kernels' sums ("on") against XLA's ("off", today's
default), one process, alternating blocks.

  python -m benchmarks.results.stream_norm_kernels.ab rir bfloat16 on,off 80

(PERFORMANCE.md, section 16.) Compiles throughput.py's step (batch 128, the CPU kernel
library) once per variant, with `stream_norm` taking the kernels' sums or not; every other
batch norm as the code is (benchmarks/on_off_ab.py).
"""
from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import functools
import sys

from benchmarks import on_off_ab
from rir_jax.kernels import batch_norm, select

_today = select._modules


def _prepare(variant: str) -> None:
  """`stream_norm` on the kernels' sums ("on") or not, read when the model is built."""
  def modules(resolved):
    return {**_today(resolved), "stream_norm": functools.partial(
        batch_norm.BatchNorm, kernel_sums=variant == "on")}
  select._modules = modules


if __name__ == "__main__":
  on_off_ab.run(*sys.argv[1:], prepare=_prepare)
