"""Host memory that stays mapped: XLA's CPU runtime otherwise pays page faults every step.

Each execution of a compiled CPU step allocates its scratch buffer (all its intermediate
buffers in one block) with malloc and frees it at the end. glibc serves blocks above its
mmap threshold (at most 32 MB) with a fresh mmap and unmaps them on free, so every step
faults in and zeroes that memory page by page again, in the kernel, on the step's time
(`python -m benchmarks.profile_step --system_malloc` counts the faults). Told to keep
freed memory, glibc hands the same pages back to the next step.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
INT_MAX = 2**31 - 1


def reuse_freed_memory() -> bool:
  """Makes glibc's malloc keep freed memory for reuse; True where it took effect.

  Three settings: no mmap for large blocks (they come from the heap instead), one
  arena for every thread (a thread's own arena cannot hold a block over 64 MB and
  would map it after all), and no trimming of the heap's free top back to the OS.
  The process's resident memory then stays at its peak, which a training run
  reaches in its first steps anyway. Call it early, before JAX starts its threads:
  a thread keeps the arena it first allocated from. No-op off glibc (macOS, musl).
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  applied = all(mallopt(param, value) == 1 for param, value in (
      (M_MMAP_MAX, 0), (M_ARENA_MAX, 1), (M_TRIM_THRESHOLD, INT_MAX)))
  if not applied:
    log.warning("malloc would not keep freed memory: CPU steps pay page faults")
  return applied
