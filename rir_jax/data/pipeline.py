"""Which examples form each batch: host-side, numpy, pure functions of their arguments.

Training order is a permutation per epoch drawn from (seed, epoch), so the
batch of any global step can be recomputed from scratch: a run resumed at step
s sees exactly the batches it would have seen. Every process computes the same
global batch and keeps its own contiguous slice, so the processes' slices,
placed side by side, are the global batch (what
`jax.make_array_from_process_local_data` assembles).
"""
import functools

import numpy as np

from rir_jax.data.errors import DataError


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  """Whole batches per epoch; the remainder of each epoch's permutation is skipped."""
  if global_batch < 1 or num_examples < global_batch:
    raise DataError(f'batch size {global_batch} must be between 1 and the number of training '
                    f'examples ({num_examples})')
  return num_examples // global_batch


def train_batch_indices(num_examples: int, global_batch: int, *, seed: int, step: int,
                        process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """Indices of this process's slice of the training batch of global step `step`.

  Args:
    num_examples: size of the training split.
    global_batch: examples per step over all processes.
    seed: the run's seed; with the epoch it fixes the epoch's order.
    step: global step, counted from 0 across epochs.
    process_index: this process, in [0, process_count).
    process_count: number of processes sharing the global batch.

  Returns:
    int64 array of shape (global_batch // process_count,).
  """
  local_batch = _local_batch(global_batch, process_index, process_count)
  epoch, step_in_epoch = divmod(int(step), steps_per_epoch(num_examples, global_batch))
  if epoch < 0:
    raise DataError(f'step must be >= 0, got {step}')
  start = step_in_epoch * global_batch + process_index * local_batch
  return _epoch_order(num_examples, seed, epoch)[start:start + local_batch].copy()


def eval_batches(num_examples: int, global_batch: int, *, process_index: int = 0,
                 process_count: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
  """(indices, mask) of this process's slice of each batch covering a split in order.

  The last global batch is padded with index 0 and mask False, so over all
  processes each example is counted exactly once when metrics are weighted by
  the mask.
  """
  local_batch = _local_batch(global_batch, process_index, process_count)
  num_batches = -(-num_examples // global_batch)
  batches = []
  for batch in range(num_batches):
    start = batch * global_batch + process_index * local_batch
    positions = np.arange(start, start + local_batch, dtype=np.int64)
    mask = positions < num_examples
    batches.append((np.where(mask, positions, 0), mask))
  return batches


def _local_batch(global_batch, process_index, process_count):
  if global_batch < 1 or process_count < 1 or global_batch % process_count:
    raise DataError(f'batch size {global_batch} must be a positive multiple of the number of '
                    f'processes ({process_count})')
  if not 0 <= process_index < process_count:
    raise DataError(f'process_index {process_index} is not in [0, {process_count})')
  return global_batch // process_count


@functools.lru_cache(maxsize=2)
def _epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The epoch's permutation, cached: consecutive steps share it."""
  order = np.random.default_rng((seed, epoch)).permutation(num_examples)
  order.flags.writeable = False  # Shared by the cache: nobody may change it.
  return order
