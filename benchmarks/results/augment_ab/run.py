"""The training augmentation's crop and flip as whole-batch operations, two ways, against
the per-example crop that rir_jax/data/augment.py runs (one dynamic slice per example
under vmap: a gather once compiled). Both variants draw exactly what augment.augment
draws, and their outputs are checked equal to its output first; then alternating blocks
of calls in one process, median milliseconds per call, and whether each compiled
program still gathers.

Usage, from the repository root: python benchmarks/results/augment_ab/run.py [BLOCKS]
"""
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from rir_jax.data import augment

PAD = augment.CROP_PADDING


def draws(key, rows):
  """augment.augment's per-example offsets and flips for a batch of `rows`."""
  def one(k):
    crop_key, flip_key = jax.random.split(k)
    top, left = jax.random.randint(crop_key, (2,), 0, 2 * PAD + 1)
    return top, left, jax.random.bernoulli(flip_key)
  return jax.vmap(one)(jax.random.split(key, rows))


def pad(images):
  return jnp.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))


def selects(images, key):
  """Each of the 2 * PAD + 1 offsets a static slice; every example selects its own."""
  tops, lefts, flips = draws(key, images.shape[0])
  padded = pad(images)

  def window(x, offsets, axis, size):
    out = jax.lax.slice_in_dim(x, 0, size, axis=axis)
    for offset in range(1, 2 * PAD + 1):
      shifted = jax.lax.slice_in_dim(x, offset, offset + size, axis=axis)
      out = jnp.where((offsets == offset)[:, None, None, None], shifted, out)
    return out

  cropped = window(window(padded, tops, 1, images.shape[1]), lefts, 2, images.shape[2])
  return jnp.where(flips[:, None, None, None], cropped[:, :, ::-1], cropped)


def one_hot_matmuls(images, key):
  """Each window the padded image between two one-hot matrices (the flip folded into
  the columns' one); exact, one pixel times 1 plus zeros."""
  tops, lefts, flips = draws(key, images.shape[0])
  height, width = images.shape[1:3]
  padded = pad(images).astype(jnp.float32)
  one_hot = lambda i, depth: (i[..., None] == jnp.arange(depth)).astype(jnp.float32)
  rows = one_hot(tops[:, None] + jnp.arange(height), height + 2 * PAD)
  columns = jnp.where(flips[:, None], jnp.arange(width)[::-1], jnp.arange(width))
  columns = one_hot(lefts[:, None] + columns, width + 2 * PAD)
  out = jnp.einsum("nip,npqc,njq->nijc", rows, padded, columns,
                   precision=jax.lax.Precision.HIGHEST)
  return out.astype(images.dtype)


def time_block(fn, images, keys):
  start = time.perf_counter()
  for key in keys:
    out = fn(images, key)
  out.block_until_ready()
  return (time.perf_counter() - start) / len(keys)


def main(blocks: int) -> None:
  variants = {"per_example": jax.jit(lambda x, k: augment.augment(x, k, "crop_flip")),
              "selects": jax.jit(selects), "one_hot_matmuls": jax.jit(one_hot_matmuls)}
  for batch in (128, 500):
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3),
                                                           dtype=np.uint8))
    keys = [jax.random.PRNGKey(i) for i in range(20)]
    reference = variants["per_example"](images, keys[1])
    identical = {name: bool(jnp.array_equal(fn(images, keys[1]), reference))
                 for name, fn in variants.items()}
    assert all(identical.values()), identical
    gathers = {name: "gather(" in fn.lower(images, keys[0]).compile().as_text()
               for name, fn in variants.items()}
    times = {name: [] for name in variants}
    for _ in range(blocks):
      for name, fn in variants.items():
        times[name].append(time_block(fn, images, keys))
    ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    print(json.dumps({"batch": batch, "outputs_identical": all(identical.values()), "compiled_gathers": gathers,
                      "ms_per_call": {name: round(v, 4) for name, v in ms.items()},
                      "blocks": blocks, "backend": jax.default_backend(),
                      "device_kind": jax.devices()[0].device_kind}))


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
