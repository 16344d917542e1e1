"""Batch norm's input fenced (today) against unfenced, one process, alternating blocks.

  python -m benchmarks.results.bn_input_fence.ab resnet bfloat16 on,off 80

(PERFORMANCE.md, section 14.) Compiles throughput.py's step (batch 128, the CPU kernel
library) twice: once as the code is, once with the `optimization_barrier` in
`rir_jax/kernels/batch_norm.py` replaced by the identity (benchmarks/on_off_ab.py).
"""
import sys

import jax

from benchmarks import on_off_ab
from rir_jax.kernels import batch_norm


class _UnfencedLax:
  def __getattr__(self, name):
    return (lambda x: x) if name == "optimization_barrier" else getattr(jax.lax, name)


class _UnfencedJax:
  lax = _UnfencedLax()

  def __getattr__(self, name):
    return getattr(jax, name)


def _prepare(variant: str) -> None:
  batch_norm.jax = jax if variant == "on" else _UnfencedJax()  # read when the step traces


if __name__ == "__main__":
  on_off_ab.run(*sys.argv[1:], prepare=_prepare)
