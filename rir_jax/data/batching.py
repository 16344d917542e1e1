"""Which examples form each batch: host-side, numpy, pure functions of their arguments.

Training order is a permutation per epoch drawn from (seed, epoch), so the
batch of any global step can be recomputed from scratch: a run resumed at step
s sees exactly the batches it would have seen. Every process computes the same
global batch and keeps its own contiguous slice, so the processes' slices,
placed side by side, are the global batch (what
`jax.make_array_from_process_local_data` assembles).

A global batch that the devices do not divide is fed as `padded_size` rows: its
examples first, in order, then padding rows (copies of an example, masked) up to
the next multiple of the device count. The padding sits at the end of the global
batch, so every process feeds the same number of rows and the real examples keep
the positions they have in an unpadded batch.
"""
import functools

import numpy as np

from rir_jax.data.errors import DataError


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  """Whole batches per epoch; the remainder of each epoch's permutation is skipped.

  The batch must be between 1 and `num_examples`: a run checks that before it starts
  (rir_jax.checks: validate, and dataset_fits against the loaded training split).
  """
  return num_examples // global_batch


def padded_size(global_batch: int, device_count: int) -> int:
  """Rows that carry `global_batch` examples over `device_count` devices: the next multiple."""
  return -(-global_batch // device_count) * device_count


def batch_rows(global_batch: int, padded_batch: int | None = None, *, process_index: int = 0,
               process_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """(positions, mask) of this process's rows of a global batch padded to `padded_batch`.

  Row r of the padded batch holds the example at position r of the global batch if
  r < global_batch (mask True), else padding: position 0 again, mask False.
  """
  padded_batch = global_batch if padded_batch is None else padded_batch
  if padded_batch < global_batch:
    raise DataError(f'{padded_batch} rows cannot hold a batch of {global_batch}')
  local_batch = _local_batch(padded_batch, process_index, process_count)
  rows = np.arange(process_index * local_batch, (process_index + 1) * local_batch,
                   dtype=np.int64)
  mask = rows < global_batch
  return np.where(mask, rows, 0), mask


def train_batch_indices(num_examples: int, global_batch: int, *, seed: int, step: int,
                        process_index: int = 0, process_count: int = 1,
                        padded_batch: int | None = None) -> np.ndarray:
  """Indices of this process's slice of the training batch of global step `step`.

  Args:
    num_examples: size of the training split.
    global_batch: examples per step over all processes.
    seed: the run's seed; with the epoch it fixes the epoch's order.
    step: global step, counted from 0 across epochs.
    process_index: this process, in [0, process_count).
    process_count: number of processes sharing the global batch.
    padded_batch: rows of the global batch as fed (see `batch_rows`); default
      `global_batch`. Padding rows repeat the step's first example.

  Returns:
    int64 array of shape (padded_batch // process_count,).
  """
  positions, _ = batch_rows(global_batch, padded_batch, process_index=process_index,
                            process_count=process_count)
  epoch, step_in_epoch = divmod(int(step), steps_per_epoch(num_examples, global_batch))
  if epoch < 0:
    raise DataError(f'step must be >= 0, got {step}')
  return _epoch_order(num_examples, seed, epoch)[step_in_epoch * global_batch + positions]


def eval_batches(num_examples: int, global_batch: int, *, process_index: int = 0,
                 process_count: int = 1,
                 padded_batch: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
  """(indices, mask) of this process's slice of each batch covering a split in order.

  Each global batch is laid out as in training (`batch_rows`), and the last one
  also ends where the split does: rows past either hold index 0 and mask False,
  so over all processes each example is counted exactly once when metrics are
  weighted by the mask.
  """
  positions, real = batch_rows(global_batch, padded_batch, process_index=process_index,
                               process_count=process_count)
  batches = []
  for batch in range(-(-num_examples // global_batch)):
    examples = batch * global_batch + positions
    mask = real & (examples < num_examples)
    batches.append((np.where(mask, examples, 0), mask))
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
