"""Host -> device batches: this process's slice of each global batch, prefetched.

Batches are a pure function of (seed, step) (see rir_jax.data.batching), so a resumed
run feeds exactly what an uninterrupted one would from the same step on. A global batch
that the mesh's devices do not divide is fed padded to the next multiple of their count
(`batching.padded_size`), its padding rows at the end.
"""
from __future__ import annotations

import concurrent.futures
import collections
import functools
from typing import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from rir_jax import parallel
from rir_jax.data import batching


def train_batch(images: np.ndarray, labels: np.ndarray, *, global_batch: int, seed: int,
                mesh: Mesh, step: int, steps: int = 1) -> dict[str, jax.Array]:
  """The global training batch of `step`, from this process's share of it; with `steps`
  > 1, the batches of steps [step, step + steps) stacked on a leading axis."""
  indices = [batching.train_batch_indices(
      len(labels), global_batch, seed=seed, step=s, process_index=jax.process_index(),
      process_count=jax.process_count(), padded_batch=batching.padded_size(global_batch, mesh.size))
               for s in range(step, step + steps)]
  idx = indices[0] if steps == 1 else np.stack(indices)
  return parallel.global_batch_from_local({"image": images[idx], "label": labels[idx]}, mesh,
                                          stacked=steps > 1)


def train_batches(images: np.ndarray, labels: np.ndarray, *, global_batch: int, seed: int,
                  mesh: Mesh, chunks: Iterable[tuple[int, int]],
                  prefetch: int = 2) -> Iterator[tuple[int, int, dict[str, jax.Array]]]:
  """(first step, steps, batch) for each (first step, steps) of `chunks`, `prefetch` ahead
  (rir_jax.dispatch.chunks: a batch of several steps comes stacked).

  A worker thread gathers and transfers the next batches while the device computes,
  so the host never stalls the step (numpy indexing and transfers release the GIL).
  """
  make = functools.partial(train_batch, images, labels, global_batch=global_batch,
                           seed=seed, mesh=mesh)
  pending = iter(chunks)
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    queue = collections.deque()
    while True:
      while len(queue) <= prefetch:
        chunk = next(pending, None)
        if chunk is None:
          break
        queue.append((*chunk, pool.submit(make, step=chunk[0], steps=chunk[1])))
      if not queue:
        return
      first, steps, batch = queue.popleft()
      yield first, steps, batch.result()


def eval_batches(images: np.ndarray, labels: np.ndarray, *, global_batch: int,
                 mesh: Mesh) -> dict[str, jax.Array]:
  """The whole split as padded, masked batches stacked on a leading axis, placed once."""
  slices = batching.eval_batches(len(labels), global_batch, process_index=jax.process_index(),
                                 process_count=jax.process_count(),
                                 padded_batch=batching.padded_size(global_batch, mesh.size))
  idx = np.stack([i for i, _ in slices])
  local = {"image": images[idx], "label": labels[idx], "mask": np.stack([m for _, m in slices])}
  return parallel.global_batch_from_local(local, mesh, stacked=True)
