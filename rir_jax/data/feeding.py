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
from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from rir_jax import parallel
from rir_jax.data import batching


def train_batch(images: np.ndarray, labels: np.ndarray, *, global_batch: int, seed: int,
                mesh: Mesh, step: int) -> dict[str, jax.Array]:
  """The global training batch of `step`, from this process's share of it."""
  idx = batching.train_batch_indices(
      len(labels), global_batch, seed=seed, step=step,
      process_index=jax.process_index(), process_count=jax.process_count(),
      padded_batch=batching.padded_size(global_batch, mesh.size))
  return parallel.global_batch_from_local({"image": images[idx], "label": labels[idx]}, mesh)


def train_batches(images: np.ndarray, labels: np.ndarray, *, global_batch: int, seed: int,
                  mesh: Mesh, start_step: int, end_step: int,
                  prefetch: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Global training batches for steps [start_step, end_step), `prefetch` ahead.

  A worker thread gathers and transfers the next batches while the device computes,
  so the host never stalls the step (numpy indexing and transfers release the GIL).
  """
  make = functools.partial(train_batch, images, labels, global_batch=global_batch,
                           seed=seed, mesh=mesh)
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    queue = collections.deque()
    for step in range(start_step, end_step):
      while len(queue) <= prefetch and step + len(queue) < end_step:
        queue.append(pool.submit(make, step=step + len(queue)))
      yield queue.popleft().result()


def eval_batches(images: np.ndarray, labels: np.ndarray, *, global_batch: int,
                 mesh: Mesh) -> dict[str, jax.Array]:
  """The whole split as padded, masked batches stacked on a leading axis, placed once."""
  slices = batching.eval_batches(len(labels), global_batch, process_index=jax.process_index(),
                                 process_count=jax.process_count(),
                                 padded_batch=batching.padded_size(global_batch, mesh.size))
  idx = np.stack([i for i, _ in slices])
  local = {"image": images[idx], "label": labels[idx], "mask": np.stack([m for _, m in slices])}
  return parallel.global_batch_from_local(local, mesh, stacked=True)
