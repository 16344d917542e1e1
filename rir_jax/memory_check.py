"""Batch sizes against memory, before the run: a batch that cannot fit fails in one line.

The estimate is a lower bound from the model's own activation shapes (one image's
intermediate outputs, traced abstractly): a train step keeps every activation for
the backward pass and its gradient beside it; an evaluation batch needs its largest
layer's input and output at once. A batch whose lower bound exceeds the memory it
would run in cannot work, and is refused before anything is written. On a host, that
memory is the least of the machine's RAM, a container's limit (a cgroup: docker --memory,
a Kubernetes pod, a SLURM job), whose excess the kernel answers with a silent kill, and
the address space `ulimit -v` leaves.
"""
from __future__ import annotations

import os
import pathlib
import resource

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rir_jax.errors import ConfigError, one_line

_GB = 1e9


def activation_bytes(model, image_shape: tuple[int, ...]) -> tuple[int, int]:
  """(all intermediate outputs, the largest one) of one image, in bytes."""
  image = jnp.zeros((1, *image_shape))
  # One abstract trace (a big model's takes a second) that inits and keeps every output.
  _, variables = jax.eval_shape(lambda: model.init_with_output(
      jax.random.PRNGKey(0), image, train=False, capture_intermediates=True, mutable=True))
  sizes = [int(np.prod(leaf.shape)) * leaf.dtype.itemsize
           for leaf in jax.tree.leaves(variables["intermediates"])]
  return sum(sizes), max(sizes, default=0)


def memory_per_device() -> tuple[int, str, bool]:
  """Bytes one device can use, what they are, and whether they are the host's (which
  all of its CPU devices share) rather than one accelerator's."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{device.device_kind}'s memory", False
  return *host_memory(), True  # CPU devices (fake ones too) share the host's memory


def host_memory(cgroup_root: pathlib.Path = pathlib.Path("/sys/fs/cgroup"),
                own_cgroups: pathlib.Path = pathlib.Path("/proc/self/cgroup")) -> tuple[int, str]:
  """Bytes this process may use of the host's memory, and what bounds them."""
  bounds = [(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
             "this machine's memory")]
  container = _cgroup_limit(cgroup_root, own_cgroups)
  if container is not None:
    bounds.append((container, "this container's memory limit (cgroup)"))
  # statm's fields: the whole address space (ulimit -v's count), ..., data (ulimit -d's).
  for limit, name, field in ((resource.RLIMIT_AS, "-v", 0), (resource.RLIMIT_DATA, "-d", 5)):
    soft = resource.getrlimit(limit)[0]
    if soft != resource.RLIM_INFINITY:
      bounds.append((max(0, soft - _mapped_bytes(field)),
                     f"the address space `ulimit {name}` leaves this process"))
  return min(bounds)


def _cgroup_limit(root: pathlib.Path, own_cgroups: pathlib.Path) -> int | None:
  """The smallest memory limit of this process's cgroup and those above it (v2's
  memory.max, v1's memory.limit_in_bytes), or None. Inside a container the hierarchy is
  often mounted from the container's own group down, so missing folders are skipped."""
  try:
    lines = own_cgroups.read_text().splitlines()
  except OSError:
    return None
  limits = []
  for line in lines:
    _, controllers, path = line.split(":", 2)
    if controllers == "":
      folder, name = root, "memory.max"  # v2: one hierarchy
    elif "memory" in controllers.split(","):
      folder, name = root / "memory", "memory.limit_in_bytes"
    else:
      continue
    parts = pathlib.PurePosixPath(path).parts[1:]
    for depth in range(len(parts) + 1):
      limits.append(_limit_in(folder.joinpath(*parts[:depth]) / name))
  limits = [limit for limit in limits if limit is not None]
  return min(limits, default=None)


def _limit_in(file: pathlib.Path) -> int | None:
  """A cgroup file's limit; None where there is none ('max', or v1's huge 'unlimited')."""
  try:
    text = file.read_text().strip()
  except OSError:
    return None
  return int(text) if text.isdigit() and int(text) < 2**62 else None


def _mapped_bytes(field: int = 0) -> int:
  """Bytes of this process's memory that one field of /proc/self/statm counts (0: the
  whole address space)."""
  with open("/proc/self/statm") as statm:
    return int(statm.read().split()[field]) * os.sysconf("SC_PAGE_SIZE")


def _images_per_memory(global_batch: int, shared_host: bool) -> int:
  """How many of a global batch's images one memory holds: a host's share, or a device's."""
  return global_batch // (jax.process_count() if shared_host else jax.device_count())


def check_batches(config: ml_collections.ConfigDict, activations: tuple[int, int],
                  image_shape: tuple[int, ...], num_test_examples: int) -> None:
  """Raises ConfigError where a train or eval batch cannot fit in memory, given one
  image's `activations` (activation_bytes)."""
  total, largest = activations
  memory, where, on_host = memory_per_device()
  share = lambda batch: _images_per_memory(batch, on_host)  # noqa: E731
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


def out_of_memory(error: BaseException, remedy: str) -> str | None:
  """One line for XLA running out of memory mid-run (the check above is a lower bound;
  other processes hold memory too), saying what to do; None for any other error, a full
  disk's RESOURCE_EXHAUSTED among them."""
  text = one_line(error)
  if not text.startswith("RESOURCE_EXHAUSTED") or "memory" not in text.lower() or (
      "No space left" in text):
    return None
  device = jax.local_devices()[0]
  if device.platform == "gpu":
    holders = ("another process may hold the GPU: JAX takes 75% of each visible GPU at "
               "start, so give each run its own (CUDA_VISIBLE_DEVICES=N) or start them with "
               "XLA_PYTHON_CLIENT_PREALLOCATE=false")
  else:
    limit, what = host_memory()
    holders = f"this process has at most {limit / _GB:.1f} GB here ({what})"
  return f"out of memory ({text[:300]}): {remedy}; {holders}"
