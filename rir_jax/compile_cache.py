"""JAX's persistent compilation cache: keys that hold across processes, damaged entries removed.

A batch-sharded step on the CPU kernel library holds `custom_partitioning` calls, whose
lowering names its partitioning rule by a Python object's address: a new cache key in
every process, so such a run compiled from scratch each time it started (seconds to
tens of seconds; most of the test suite's processes). `stable_keys` leaves the address
out of the key, as JAX's own option does, and keeps in what it stood for: each kernel
call sits in a function named after the kernel and its static arguments
(rir_jax/kernels/sharding.py, `named`), and the key takes a fingerprint of the code of
the kernels' rules (rir_jax/kernels/*.py), so that an entry only ever matches the
program it was compiled from, across versions of this project too. It takes the CPU's
feature flags as well: XLA compiles a CPU program for the host's instruction set, which
JAX's key leaves out, so a cache folder shared by machines of different CPUs (a home
directory on network storage) would hand a machine programs built for another's.

JAX writes a cache entry in place, not through a temporary file, and never replaces an
entry that exists. So an entry cut short (a process preempted while writing it, a
partial copy of the cache folder, a disk that filled up) stays cut: every later run
warns, in a multi-line warning, that it cannot read it, and compiles again, forever.
`remove_damaged_entries` turns that warning into one line and removes the entries of
that function that no longer decompress; the compile that follows writes them again. A
write that fails (a full or read-only cache folder) is one line too, its cut entry removed.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import pathlib
import re
import warnings

import jax
from jax._src import cache_key  # where the key's custom part is read from
from jax._src import compilation_cache  # the cache's own (de)compression, to match it

from rir_jax import library_noise, storage
from rir_jax.kernels import build

log = logging.getLogger(__name__)
# jax._src.compiler's warnings of a failed read and a failed write, in jax 0.10.
_FAILED = re.compile(r"Error (reading|writing) persistent compilation cache entry for "
                     r"'([^']+)': (.*)", re.DOTALL)


def _is_whole(entry) -> bool:
  try:
    compilation_cache.decompress_executable(entry.read_bytes())
  except Exception:  # pylint: disable=broad-except
    return False  # every decompressor raises its own error type on a cut stream
  return True


def remove_damaged(cache_dir: str, function: str) -> list[str]:
  """Removes `function`'s entries in `cache_dir` that do not decompress; their names."""
  removed = []
  for entry in storage.as_path(cache_dir).glob(f"{function}-*-cache"):
    if not _is_whole(entry):
      entry.unlink(missing_ok=True)
      removed.append(entry.name)
  return removed


def _on_warning(show):
  def handle(message, category, filename, lineno, file=None, line=None):
    failed = _FAILED.match(str(message))
    cache_dir = jax.config.jax_compilation_cache_dir
    if failed is None or not cache_dir:
      return show(message, category, filename, lineno, file, line)
    action, function, error = failed.groups()
    # A write cut short (a full disk) leaves what it wrote: removed too, to read whole later.
    removed = remove_damaged(cache_dir, function)
    log.warning("compilation cache entry for %r %s (%s): %s%s", function,
                "unreadable" if action == "reading" else "not written",
                library_noise.first_line(error),
                "compiling again" if action == "reading" else "the next run compiles it again",
                f"; removed {len(removed)} damaged entr{'y' if len(removed) == 1 else 'ies'} "
                f"of it" if removed else "")
  return handle


def remove_damaged_entries() -> None:
  """From now on, an unreadable cache entry is one line, and removed if it is damaged."""
  warnings.showwarning = _on_warning(warnings.showwarning)


@functools.cache
def _kernels_and_cpu_fingerprint() -> str:
  """A hash of the code that lowers and partitions the CPU library's kernels, and of the
  CPU's feature flags."""
  kernels = pathlib.Path(__file__).resolve().parent / "kernels"
  digest = hashlib.sha256()
  for source in sorted(kernels.glob("*.py")):
    digest.update(source.name.encode() + b"\0" + source.read_bytes())
  digest.update(" ".join(sorted(build.cpu_flags())).encode())
  return digest.hexdigest()


def stable_keys() -> bool:
  """Cache keys without custom_partitioning's per-process addresses (see the module's
  docstring); whether this JAX lets them be. Process-wide: for a process that runs the
  project's programs (launch.py), not for a library user's own custom_partitioning
  calls, which nothing names."""
  if not hasattr(cache_key, "custom_hook"):
    return False  # a JAX without the hook: keep its per-process keys, never a wrong hit
  cache_key.custom_hook = _kernels_and_cpu_fingerprint
  jax.config.update("jax_remove_custom_partitioning_ptr_from_cache_key", True)
  return True
