"""ResNet-20's convolutions one at a time: XLA's CPU kernels against oneDNN's.

  python -m benchmarks.conv_ops [--batch=128] [--reps=25] [--dtype=float32,bfloat16]

For every 3x3 convolution shape of ResNet-20 on CIFAR (NHWC, padding 1), times the
forward pass, the input gradient and the weight gradient, each a jit-compiled
function, with the two implementations alternating call by call so that a noisy
machine slows both alike. Prints one JSON object per (shape, dtype, pass): the
median milliseconds of each and their ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
from jax import lax

from rir_jax.kernels import conv as onednn, select

# (height = width, input channels, output channels, stride) of ResNet-20's 3x3 convs.
SHAPES = ((32, 16, 16, 1), (16, 32, 32, 1), (8, 64, 64, 1), (32, 16, 32, 2), (16, 32, 64, 2))
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def passes(conv, strides: int) -> dict:
  """The forward pass and both gradients of `conv`, each jit-compiled on its own."""
  def forward(x, w):
    return conv(x, w, (strides, strides), ((1, 1), (1, 1)), dimension_numbers=DIMENSIONS)

  return {
      "forward": jax.jit(lambda x, w, dy: forward(x, w)),
      "grad_input": jax.jit(lambda x, w, dy: jax.vjp(lambda x: forward(x, w), x)[1](dy)[0]),
      "grad_weight": jax.jit(lambda x, w, dy: jax.vjp(lambda w: forward(x, w), w)[1](dy)[0]),
  }


def seconds(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def compare(xla_fn, onednn_fn, args, reps: int) -> tuple[float, float]:
  """Median milliseconds of the two, called alternately after 3 warm-up calls each."""
  for _ in range(3):
    seconds(xla_fn, *args), seconds(onednn_fn, *args)
  xla, ours = [], []
  for _ in range(reps):
    xla.append(seconds(xla_fn, *args))
    ours.append(seconds(onednn_fn, *args))
  return statistics.median(xla) * 1e3, statistics.median(ours) * 1e3


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--reps", type=int, default=25)
  p.add_argument("--dtype", default="float32,bfloat16")
  args = p.parse_args(argv)
  available, reason = select.cpu_library_usable()
  if not available:
    print(f"error: oneDNN cannot run here: {reason}", file=sys.stderr)
    return 2
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  for dtype in args.dtype.split(","):
    for size, c_in, c_out, strides in SHAPES:
      x = jax.random.normal(keys[0], (args.batch, size, size, c_in), dtype)
      w = jax.random.normal(keys[1], (3, 3, c_in, c_out), dtype)
      dy = jax.random.normal(keys[2], (args.batch, size // strides, size // strides, c_out),
                             dtype)
      xla, ours = passes(lax.conv_general_dilated, strides), passes(
          onednn.conv_general_dilated, strides)
      for name in xla:
        xla_ms, onednn_ms = compare(xla[name], ours[name], (x, w, dy), args.reps)
        print(json.dumps({
            "shape": f"{size}x{size}x{c_in}->{c_out} s{strides}", "dtype": dtype,
            "pass": name, "batch": args.batch, "xla_ms": round(xla_ms, 4),
            "onednn_ms": round(onednn_ms, 4), "speedup": round(xla_ms / onednn_ms, 2),
            "onednn": reason.split(" (")[0]}), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
