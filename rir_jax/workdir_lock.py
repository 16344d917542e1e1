"""One run per workdir: a lock that a second command meets, and that dies with its holder.

`WORKDIR/lock` holds the holder's pid and host. The lock itself is the kernel's
(`fcntl.flock`), released when the holding process ends however it ends, so a lock
file left by a dead process is simply taken over. Only process 0 of a multi-process
run takes it: its peers are the same run.
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import os
import pathlib
import socket

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
_held: dict[str, object] = {}  # lock path -> open file, for this process's life


class WorkdirBusy(ValueError):
  """Another live process trains in this workdir."""


def _holder(path: pathlib.Path) -> str:
  try:
    text = path.read_text().strip()
  except OSError:
    text = ""
  return text or "an unknown process"


def acquire(workdir: pathlib.Path):
  """Takes the workdir's lock for the life of this process; returns its open file.

  Raises WorkdirBusy, naming the holder, when a live process has it.
  """
  path = workdir / LOCK_FILE
  key = str(path.resolve())
  if key in _held:  # this process's own (a benchmark trains several runs in one process)
    return _held[key]
  handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until the process ends
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as error:
    handle.close()
    if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
      raise WorkdirBusy(f"--workdir={workdir} is in use by {_holder(path)} (lock file "
                        f"{path}); wait for it to end or use another workdir") from None
    # A file system without locks (some network mounts): run unguarded, but say so.
    log.warning("cannot lock %s (%s): not guarded against a second run", path, error.strerror)
    return None
  previous = _holder(path)
  if previous != "an unknown process":
    log.info("taking over the lock of %s, which has ended", previous)
  handle.seek(0)
  handle.truncate()
  handle.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
  handle.flush()
  atexit.register(_release, handle)
  _held[key] = handle
  return handle


def _release(handle) -> None:
  """Empties the lock file on the way out: the next run has no one to take over from."""
  try:
    handle.truncate(0)
    handle.close()
  except OSError:  # a full or read-only disk by now: the kernel's lock goes anyway
    pass
