"""Batch sizes against memory, before the run: a batch that cannot fit fails in one line.

The estimate is a lower bound from the model's own activation shapes (one image's
intermediate outputs, traced abstractly): a train step keeps every activation for
the backward pass and its gradient beside it; an evaluation batch needs its largest
layer's input and output at once. A batch whose lower bound exceeds the memory it
would run in cannot work, and is refused before anything is written.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rir_jax.errors import ConfigError

_GB = 1e9
_HOST = "this machine's memory"


def activation_bytes(model, image_shape: tuple[int, ...]) -> tuple[int, int]:
  """(all intermediate outputs, the largest one) of one image, in bytes."""
  image = jnp.zeros((1, *image_shape))
  # One abstract trace (a big model's takes a second) that inits and keeps every output.
  _, variables = jax.eval_shape(lambda: model.init_with_output(
      jax.random.PRNGKey(0), image, train=False, capture_intermediates=True, mutable=True))
  sizes = [int(np.prod(leaf.shape)) * leaf.dtype.itemsize
           for leaf in jax.tree.leaves(variables["intermediates"])]
  return sum(sizes), max(sizes, default=0)


def memory_per_device() -> tuple[int, str]:
  """Bytes one device can use, and what they are: the accelerator's, or the host's RAM."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{device.device_kind}'s memory"
  # CPU devices (fake ones too) share the host's memory.
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), _HOST


def _images_per_memory(global_batch: int, shared_host: bool) -> int:
  """How many of a global batch's images one memory holds: a host's share, or a device's."""
  return global_batch // (jax.process_count() if shared_host else jax.device_count())


def check_batches(config: ml_collections.ConfigDict, activations: tuple[int, int],
                  image_shape: tuple[int, ...], num_test_examples: int) -> None:
  """Raises ConfigError where a train or eval batch cannot fit in memory, given one
  image's `activations` (activation_bytes)."""
  total, largest = activations
  memory, where = memory_per_device()
  share = lambda batch: _images_per_memory(batch, where == _HOST)  # noqa: E731
  padded_test = -(-num_test_examples // config.eval_batch_size) * config.eval_batch_size
  needs = {
      "batch_size": share(config.batch_size) * 2 * total,
      # The whole (padded) test split is placed at once, as uint8, beside one batch's layers.
      "eval_batch_size": (share(config.eval_batch_size) * 2 * largest
                          + share(padded_test) * int(np.prod(image_shape))),
  }
  for key, need in needs.items():
    if need > memory:
      raise ConfigError(f"--config.{key}={config[key]} needs at least {need / _GB:.1f} GB, "
                        f"more than the {memory / _GB:.1f} GB of {where}; use a smaller {key}")
