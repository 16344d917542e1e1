"""A strided 1x1 convolution on the CPU library: oneDNN's own strided kernel against the
unit-stride one over the pixels it reads (rir_jax/kernels/conv.py `_pixels_read`).

Forward and both gradients, jitted, in alternating blocks in one process; the shapes of
the CIFAR models' projection shortcuts at batch 128. Prints each path's median step time
and its largest error against XLA's convolution, relative to the largest entry.

python benchmarks/results/strided_1x1_ab/run.py [BLOCKS]
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rir_jax.kernels import conv

DN = ("NHWC", "HWIO", "NHWC")
SHAPES = [((128, 32, 32, 16), (1, 1, 16, 32)), ((128, 16, 16, 32), (1, 1, 32, 64)),
          ((128, 32, 32, 4), (1, 1, 4, 8))]


def oned_nn_strided(x, w):
  """The convolution as one oneDNN call with strides 2, as before the change."""
  return conv._conv(x, w, (2, 2), ((0, 0), (0, 0)))  # pylint: disable=protected-access


def pixels_read(x, w):
  return conv.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=DN)


def xla(x, w):
  return lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=DN)


def step(fn):
  def loss(x, w, r):
    return jnp.sum(fn(x, w) * r)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def main(blocks: int) -> None:
  available, reason = conv.is_available()  # builds and registers the library
  assert available, reason
  rng = np.random.default_rng(0)
  for x_shape, w_shape in SHAPES:
    x, w = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (x_shape, w_shape))
    r = jnp.asarray(rng.standard_normal(jax.eval_shape(xla, x, w).shape), jnp.float32)
    steps = {name: step(fn) for name, fn in (("onednn_strided", oned_nn_strided),
                                              ("pixels_read", pixels_read), ("xla", xla))}
    reference = steps["xla"](x, w, r)[1]
    times = {name: [] for name in ("onednn_strided", "pixels_read")}
    for name in times:
      grads = jax.block_until_ready(steps[name](x, w, r))[1]
      error = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                  for a, b in zip(grads, reference))
      print(f"{x_shape} {w_shape} {name}: largest gradient error {error:.2g}")
    for _ in range(blocks):
      for name in times:
        for _ in range(5):
          start = time.perf_counter()
          jax.block_until_ready(steps[name](x, w, r))
          times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    print(f"{x_shape} {w_shape} median ms: " + ", ".join(
        f"{name} {ms:.3f}" for name, ms in medians.items())
        + f"; onednn_strided / pixels_read {medians['onednn_strided'] / medians['pixels_read']:.2f}")


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
