"""Batch 500's convolutions on the kernel library: per image against batch 125, and the
weight gradient in chunks of the batch against whole.

  python -m benchmarks.results.batch500_convs.ab [float32|bfloat16]

The profile of ResNet-20's f32 step (benchmarks/profile_step.py) puts the weight gradients
at 527 us per image at batch 500 against 468 at batch 128. Two questions, one JSON line per
ResNet-20 3x3 shape each: (1) alone, does a convolution cost more per image at batch 500
than at 125 ("per_image_500_over_125" < 1: cheaper at 500)? (2) is the weight gradient
faster summed over chunks of 125, 250 or 50 images ("whole_over_chunked" > 1: chunks
win)? Medians of 12-15 interleaved calls.
"""
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks.conv_ops import DIMENSIONS, SHAPES, passes
from rir_jax.kernels import conv as onednn

BATCH = 500


def _median_s(f, *args, reps=15) -> float:
  f(*args).block_until_ready()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    f(*args).block_until_ready()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _operands(batch, hw, cin, cout, strides, dtype):
  keys = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(keys[0], (batch, hw, hw, cin), dtype),
          jax.random.normal(keys[1], (3, 3, cin, cout), dtype),
          jax.random.normal(keys[2], (batch, hw // strides, hw // strides, cout), dtype))


def _chunked_weight_grad(chunks: int, strides: int):
  size = BATCH // chunks

  def forward(x, w):
    return onednn.conv_general_dilated(x, w, (strides, strides), ((1, 1), (1, 1)),
                                       dimension_numbers=DIMENSIONS)

  def grad(x, w, dy):
    return sum(jax.vjp(lambda w: forward(x[i * size:(i + 1) * size], w), w)[1](
        dy[i * size:(i + 1) * size])[0] for i in range(chunks))
  return jax.jit(grad)


def main(dtype: str) -> None:
  dtype = jnp.dtype(dtype)
  for hw, cin, cout, strides in SHAPES:
    shape = {"hw": hw, "cin": cin, "cout": cout, "strides": strides, "dtype": dtype.name}
    fs = passes(onednn.conv_general_dilated, strides)
    per_image = {}
    for batch in (125, BATCH):
      operands = _operands(batch, hw, cin, cout, strides, dtype)
      for name, f in fs.items():
        per_image[(name, batch)] = _median_s(f, *operands) / batch * 1e6
    print(json.dumps({**shape, "per_image_us_125": {n: round(per_image[(n, 125)], 1) for n in fs},
                      "per_image_500_over_125": {n: round(per_image[(n, BATCH)] / per_image[(n, 125)], 3)
                                                 for n in fs}}), flush=True)
    operands = _operands(BATCH, hw, cin, cout, strides, dtype)
    candidates = {"whole": fs["grad_weight"],
                  **{f"{c}x{BATCH // c}": _chunked_weight_grad(c, strides) for c in (2, 4, 10)}}
    times = {name: [] for name in candidates}
    for f in candidates.values():
      f(*operands).block_until_ready()
    for _ in range(12):  # interleaved: a noisy moment slows every candidate alike
      for name, f in candidates.items():
        start = time.perf_counter()
        f(*operands).block_until_ready()
        times[name].append(time.perf_counter() - start)
    whole = statistics.median(times["whole"])
    print(json.dumps({**shape, "weight_grad_ms": {n: round(statistics.median(t) * 1e3, 2)
                                                  for n, t in times.items()},
                      "whole_over_chunked": {n: round(whole / statistics.median(t), 3)
                                             for n, t in times.items() if n != "whole"}}),
          flush=True)


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "float32")
