"""One run per gs:// workdir: a lease kept in an object, that a second command meets.

flock (rir_jax/workdir_lock.py) needs a local file system. On Google Cloud Storage the
lock is the object `WORKDIR/lock`, created only where none exists (a generation
precondition: of two commands racing, one wins). Its holder rewrites it every quarter of
the stale time. A command that finds it held watches it on its own clock, comparing no
clocks across hosts: a rewrite means a live holder (WorkdirBusy, naming it); none for
the stale time means a holder that died without letting go (a VM preempted without
warning, kill -9), whose lock is taken over. A holder that finds its lock taken over
(its rewrites failed for that long) stops at once and writes nothing more. Only process
0 of a multi-process run takes it.

RIR_JAX_BUCKET_LOCK_STALE_S sets the stale time (default 120 s): a second command on a
busy workdir learns it within a quarter of it, a resume after a hard kill waits it out.
"""
from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import socket
import sys
import threading
import time

from google.api_core import exceptions
from google.cloud import storage as gcs

from rir_jax import library_noise
from rir_jax.workdir_lock import LOCK_FILE, WorkdirBusy

log = logging.getLogger(__name__)

# Renewals and the release try once each (the next renewal is the retry; an exit must not
# hang on a network that is gone): at most this long.
_TIMEOUT_S = 10
_held: dict[str, Lease] = {}  # workdir -> this process's lease (benchmarks train several runs)


def stale_s() -> float:
  return float(os.environ.get("RIR_JAX_BUCKET_LOCK_STALE_S", "120"))


@dataclasses.dataclass
class Lease:
  """This process's hold on a workdir's lock object."""
  bucket: gcs.Bucket
  name: str
  holder: str
  generation: int
  stop: threading.Event = dataclasses.field(default_factory=threading.Event)
  renewer: threading.Thread | None = None

  def url(self) -> str:
    return f"gs://{self.bucket.name}/{self.name}"


def _write(bucket: gcs.Bucket, name: str, holder: str, *, if_generation_match: int,
           **retry) -> int:
  """Uploads the lock naming `holder` where its generation is as given (0: absent)."""
  blob = bucket.blob(name)
  blob.upload_from_string(f"{holder}\n", if_generation_match=if_generation_match,
                          timeout=_TIMEOUT_S, **retry)
  return blob.generation


def acquire(workdir) -> Lease:
  """Takes the gs:// workdir's lock for the life of this process; returns the lease.

  Raises WorkdirBusy, naming the holder, when a live process has it.
  """
  key = str(workdir).rstrip("/")
  if key in _held:
    return _held[key]
  bucket_name, _, folder = key.removeprefix("gs://").partition("/")
  bucket = gcs.Client().bucket(bucket_name)
  name = f"{folder}/{LOCK_FILE}" if folder else LOCK_FILE
  holder = f"pid {os.getpid()} on host {socket.gethostname()}"
  generation = None
  while generation is None:
    try:
      generation = _write(bucket, name, holder, if_generation_match=0)
    except exceptions.PreconditionFailed:
      current = bucket.get_blob(name)
      if current is not None:  # else let go of just now: try again
        generation = _outwait(bucket, current, holder, workdir)
  lease = Lease(bucket, name, holder, generation)
  lease.renewer = threading.Thread(target=_renew, args=(lease,), name="bucket_lock",
                                   daemon=True)
  lease.renewer.start()
  atexit.register(release, lease)
  _held[key] = lease
  return lease


def _outwait(bucket: gcs.Bucket, current: gcs.Blob, holder: str, workdir) -> int | None:
  """Watches a held lock for the stale time: raises WorkdirBusy when it is rewritten, else
  takes it over. Returns the new generation, or None when it was let go or taken first."""
  try:
    other = current.download_as_text().strip() or "an unknown process"
  except exceptions.NotFound:  # let go of since it was listed
    return None
  log.warning("--workdir=%s is locked by %s; watching its lock for up to %.0f s to see "
              "whether that run is alive", workdir, other, stale_s())
  since = time.monotonic()
  while time.monotonic() - since < stale_s():
    time.sleep(min(5.0, stale_s() / 20))
    now = bucket.get_blob(current.name)
    if now is None:
      return None
    if now.generation != current.generation:
      raise WorkdirBusy(f"--workdir={workdir} is in use by {other} (its lock gs://"
                        f"{bucket.name}/{current.name} is kept alive); wait for it to end "
                        "or use another workdir")
  try:
    generation = _write(bucket, current.name, holder, if_generation_match=current.generation)
  except exceptions.PreconditionFailed:
    return None
  log.info("took over the lock of %s, not renewed for %.0f s", other, stale_s())
  return generation


def _renew(lease: Lease) -> None:
  """Rewrites the lock every quarter of the stale time until released or taken over."""
  while not lease.stop.wait(stale_s() / 4):
    try:
      lease.generation = _write(lease.bucket, lease.name, lease.holder,
                                if_generation_match=lease.generation, retry=None)
    except exceptions.PreconditionFailed:
      if not lease.stop.is_set():
        _lost(lease)
      return
    except Exception as error:  # noqa: BLE001 - a network error: the next rewrite may pass
      log.warning("could not renew the lock %s (%s: %s); trying again", lease.url(),
                  type(error).__name__, library_noise.first_line(str(error)))


def _lost(lease: Lease) -> None:
  """Another command took the workdir over: any further write would mix two runs."""
  print(f"error: the lock {lease.url()} was taken over by another command (it was not "
        f"renewed for {stale_s():.0f} s); stopping without writing more", file=sys.stderr,
        flush=True)
  os._exit(1)


def release(lease: Lease) -> None:
  """Deletes the lock if it is still this process's: the next run has nothing to wait out.
  Best effort: a lock left behind is taken over once stale."""
  lease.stop.set()
  if lease.renewer is not None:
    lease.renewer.join(_TIMEOUT_S)  # a rewrite under way ends first: it would find no lock
  try:
    current = lease.bucket.get_blob(lease.name, timeout=_TIMEOUT_S, retry=None)
    if current is not None and current.generation == lease.generation:
      lease.bucket.blob(lease.name).delete(if_generation_match=lease.generation,
                                           timeout=_TIMEOUT_S, retry=None)
  except Exception:  # noqa: BLE001, S110 - at exit, offline or not: nothing to do about it
    pass
