"""One run per gs:// workdir: the lease in WORKDIR/lock, against a local GCS emulator.

A stale time of 1.2 s: holders rewrite their lock every 0.3 s.
"""
import os
import socket
import threading
import time

import pytest
from google.cloud import storage as gcs

import gcs_emulator
from rir_jax import bucket_lock
from rir_jax.workdir_lock import WorkdirBusy

BUCKET = "rir-lock-test"
STALE_S = 1.2
OURS = f"pid {os.getpid()} on host {socket.gethostname()}"


@pytest.fixture(scope="module")
def bucket():
  with gcs_emulator.running_emulator() as (url, _):
    gcs_emulator.create_bucket(url, BUCKET)
    yield gcs.Client().bucket(BUCKET)


@pytest.fixture
def lost(bucket, monkeypatch):
  """Leases lost to another command (instead of exiting); each test's leases released."""
  monkeypatch.setenv("RIR_JAX_BUCKET_LOCK_STALE_S", str(STALE_S))
  monkeypatch.setattr(bucket_lock, "_held", {})
  taken = []
  monkeypatch.setattr(bucket_lock, "_lost", taken.append)
  yield taken
  for lease in bucket_lock._held.values():
    bucket_lock.release(lease)


def _text(bucket, name):
  blob = bucket.get_blob(name)
  return None if blob is None else blob.download_as_text().strip()


def _other_holder(bucket, name, stop: threading.Event) -> threading.Thread:
  """A live command elsewhere: its lock, rewritten every 0.2 s until `stop`."""
  blob = bucket.blob(name)
  blob.upload_from_string("pid 1 on host elsewhere\n", if_generation_match=0)

  def renew():
    while not stop.wait(0.2):
      blob.upload_from_string("pid 1 on host elsewhere\n")

  thread = threading.Thread(target=renew, daemon=True)
  thread.start()
  return thread


def test_a_lock_kept_alive_elsewhere_is_busy_within_a_fraction_of_the_stale_time(bucket,
                                                                                 lost):
  stop = threading.Event()
  holder = _other_holder(bucket, "runs/busy/lock", stop)
  began = time.monotonic()
  try:
    with pytest.raises(WorkdirBusy, match="in use by pid 1 on host elsewhere"):
      bucket_lock.acquire(f"gs://{BUCKET}/runs/busy")
  finally:
    stop.set()
    holder.join()
  assert time.monotonic() - began < STALE_S
  assert _text(bucket, "runs/busy/lock") == "pid 1 on host elsewhere"  # left alone


def test_a_lock_its_holder_left_behind_is_taken_over_once_stale_then_renewed(bucket, lost):
  bucket.blob("runs/killed/lock").upload_from_string("pid 1 on host gone\n")
  began = time.monotonic()
  lease = bucket_lock.acquire(f"gs://{BUCKET}/runs/killed")
  assert time.monotonic() - began >= STALE_S
  assert _text(bucket, "runs/killed/lock") == OURS
  first = bucket.get_blob("runs/killed/lock").generation
  time.sleep(STALE_S / 2)
  assert bucket.get_blob("runs/killed/lock").generation != first  # renewed, so alive
  assert bucket_lock.acquire(f"gs://{BUCKET}/runs/killed") is lease  # once per process
  assert lost == []


def test_a_free_workdir_is_taken_at_once_and_let_go_at_release(bucket, lost):
  began = time.monotonic()
  lease = bucket_lock.acquire(f"gs://{BUCKET}/runs/free/")
  assert time.monotonic() - began < STALE_S  # no stale time waited out
  assert _text(bucket, "runs/free/lock") == OURS
  bucket_lock.release(lease)
  assert _text(bucket, "runs/free/lock") is None


def test_a_holder_whose_lock_was_taken_over_stops_and_leaves_the_new_lock(bucket, lost):
  lease = bucket_lock.acquire(f"gs://{BUCKET}/runs/taken")
  blob = bucket.blob("runs/taken/lock")
  blob.upload_from_string("pid 2 on host newer\n", if_generation_match=lease.generation)
  time.sleep(STALE_S / 2)
  assert lost == [lease]
  bucket_lock.release(lease)
  assert _text(bucket, "runs/taken/lock") == "pid 2 on host newer"
