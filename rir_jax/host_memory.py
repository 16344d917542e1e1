"""Host memory that stays mapped, on huge pages: XLA's CPU runtime pays for every page.

Each execution of a compiled CPU step allocates its scratch buffer (all its intermediate
buffers in one block) with malloc and frees it at the end. glibc serves blocks above its
mmap threshold (at most 32 MB) with a fresh mmap and unmaps them on free, so every step
faults in and zeroes that memory page by page again, in the kernel, on the step's time
(`python -m benchmarks.profile_step --system_malloc` counts the faults). Told to keep
freed memory, glibc hands the same pages back to the next step.

Those pages are 4 KB unless malloc asks the kernel for transparent huge pages (2 MB),
which glibc does only when started with its tunable `glibc.malloc.hugetlb=1`: an
entry point restarts itself once with it (`restart_with_huge_pages`), and a step that
sweeps ~100 MB of scratch then touches ~50 pages instead of ~25,000, fewer than the TLB
holds (benchmarks/PERFORMANCE.md, section 15).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pathlib
import re
import sys
from typing import Mapping

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
INT_MAX = 2**31 - 1

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
HUGE_PAGES_SINCE = (2, 35)  # the glibc release that added the tunable
THP_MODE = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")


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


def huge_pages_environment(environ: Mapping[str, str], thp_mode: str | None,
                           glibc: tuple[int, int] | None) -> dict[str, str] | None:
  """`environ` plus the tunable that gives malloc huge pages, or None where that changes
  nothing: no glibc or one older than the tunable, a kernel whose transparent huge pages
  are not 'madvise' ('always' gives them to the heap already, 'never' to nobody), or a
  GLIBC_TUNABLES that sets the tunable already (the user's choice, or this restart's)."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if glibc is None or glibc < HUGE_PAGES_SINCE or thp_mode != "madvise":
    return None
  if HUGE_PAGES_TUNABLE in tunables:
    return None
  return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables,
                                                               f"{HUGE_PAGES_TUNABLE}=1"]))}


def restart_with_huge_pages() -> None:
  """Re-executes this process, same interpreter and arguments, with malloc on huge pages.

  Returns where `huge_pages_environment` says there is nothing to gain, which includes
  the restarted process itself. Call it first thing in an entry point, before the heavy
  imports: they run again. GLIBC_TUNABLES=glibc.malloc.hugetlb=0 keeps it from restarting.
  """
  environment = huge_pages_environment(os.environ, _thp_mode(), _glibc_version())
  if environment is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environment)


def _thp_mode() -> str | None:
  """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), if any."""
  try:
    match = re.search(r"\[(\w+)\]", THP_MODE.read_text())
  except OSError:
    return None
  return match and match.group(1)


def _glibc_version() -> tuple[int, int] | None:
  try:
    name = os.confstr("CS_GNU_LIBC_VERSION") or ""  # 'glibc 2.36'; musl, macOS: none
  except (ValueError, OSError):
    return None
  match = re.fullmatch(r"glibc (\d+)\.(\d+).*", name)
  return (int(match.group(1)), int(match.group(2))) if match else None
