"""Damaged entries of JAX's persistent compilation cache: removed, so that they are written again.

JAX writes a cache entry in place, not through a temporary file, and never replaces an
entry that exists. So an entry cut short (a process preempted while writing it, a
partial copy of the cache folder, a disk that filled up) stays cut: every later run
warns, in a multi-line warning, that it cannot read it, and compiles again, forever.
`remove_damaged_entries` turns that warning into one line and removes the entries of
that function that no longer decompress; the compile that follows writes them again.
"""
from __future__ import annotations

import logging
import re
import warnings

import jax
from jax._src import compilation_cache  # the cache's own (de)compression, to match it

from rir_jax import library_noise, storage

log = logging.getLogger(__name__)
# jax._src.compiler._cache_read's warning, in jax 0.10.
_UNREADABLE = re.compile(r"Error reading persistent compilation cache entry for '([^']+)': (.*)",
                         re.DOTALL)


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
    unreadable = _UNREADABLE.match(str(message))
    cache_dir = jax.config.jax_compilation_cache_dir
    if unreadable is None or not cache_dir:
      return show(message, category, filename, lineno, file, line)
    function, error = unreadable.groups()
    removed = remove_damaged(cache_dir, function)
    log.warning("compilation cache entry for %r unreadable (%s): compiling again%s", function,
                library_noise.first_line(error),
                f"; removed {len(removed)} damaged entr{'y' if len(removed) == 1 else 'ies'} "
                f"of it" if removed else "")
  return handle


def remove_damaged_entries() -> None:
  """From now on, an unreadable cache entry is one line, and removed if it is damaged."""
  warnings.showwarning = _on_warning(warnings.showwarning)
