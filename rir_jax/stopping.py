"""SIGTERM (preemption, Slurm, Kubernetes), SIGINT (Ctrl-C) and SIGHUP (the terminal or
SSH session the command ran in went away) as orderly stops.

Before the training loop a signal stops the command at once: nothing of the run exists
yet that a stop could lose. Inside the loop it only raises a flag, read at the next step
boundary, where the loop checkpoints that step, flushes its writers and stops; a second
signal stops at once. In a multi-process run JAX's preemption service takes SIGTERM
after `jax.distributed.initialize`, and the processes agree on the step to stop at
(`reached_preemption_sync_point`), so that every process saves the same one.
Studies that train many runs one after another (benchmarks/compare.py, paper.py) stop
the same way (`orderly`): the run in training checkpoints its step, the finished ones
stay finished.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from typing import Callable

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class Stopped(BaseException):
  """The run was asked to stop by a signal (not an Exception: nothing on the way catches it)."""

  def __init__(self, signum: int, step: int | None = None):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum
    self.step = step

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class StopSignals:
  """Installed once per process by the command; the loop asks it at every step boundary."""

  def __init__(self):
    self.received: int | None = None
    self._deferred = False
    self._before = {}

  def install(self) -> None:
    if threading.current_thread() is not threading.main_thread():
      return  # signal handlers can only be set from the main thread
    ours = [signal.SIGINT]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup: the user's choice
      ours.append(signal.SIGHUP)
    if jax.process_count() == 1:  # else JAX's preemption service owns SIGTERM
      ours.append(signal.SIGTERM)
    self._before = {signum: signal.signal(signum, self._handle) for signum in ours}

  def uninstall(self) -> None:
    """The handlers from before `install` (for callers in a longer-lived process)."""
    for signum, handler in self._before.items():
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: not Python's
    self._before = {}

  def _handle(self, signum, frame) -> None:
    del frame
    # One process of several cannot stop alone at a step of its choosing (the save is
    # collective): SIGINT or SIGHUP then stops it at once, like SIGTERM without JAX's
    # service.
    if self._deferred and self.received is None and jax.process_count() == 1:
      self.received = signum
      log.warning("%s received: stopping after this step, with a checkpoint of it",
                  signal.Signals(signum).name)
      return
    raise Stopped(signum)

  @contextlib.contextmanager
  def deferred(self):
    """Inside, a first signal waits for `requested`; outside, it stops at once."""
    self._deferred = True
    try:
      yield
    finally:
      self._deferred = False

  def requested(self, boundary: int) -> int | None:
    """The signal to stop for at this step boundary, if any (every process calls this).

    `boundary` counts the boundaries 1, 2, 3, ...: JAX's preemption sync point is the
    count after the highest any process has reached, so no count may be skipped.
    """
    if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(boundary):
      return signal.SIGTERM
    return self.received


class _NoSignals:
  """For library callers (tests, benchmarks): signals keep Python's default behaviour."""

  @contextlib.contextmanager
  def deferred(self):
    yield

  def requested(self, boundary: int) -> int | None:
    del boundary
    return None


NO_SIGNALS = _NoSignals()


def report(error: BaseException) -> int:
  """SIGTERM, SIGINT or SIGHUP: one line saying where the run stopped and how to go on;
  returns the exit code (128 + the signal's number)."""
  if isinstance(error, KeyboardInterrupt):
    error = Stopped(signal.SIGINT)
  where = (f" at step {error.step}, its checkpoint saved" if error.step is not None else "")
  try:
    print(f"stopped by {signal.Signals(error.signum).name}{where}; re-run the same command "
          "to continue", file=sys.stderr, flush=True)
  except OSError:  # SIGHUP: the terminal is gone; the checkpoint and the exit code say it
    pass
  return error.exit_code


def orderly(command: Callable[[StopSignals], int]) -> int:
  """Runs `command(signals)` with this process's signals as orderly stops (the command
  passes `signals` to each run's loop); a stop is `report`ed."""
  signals = StopSignals()
  signals.install()
  try:
    return command(signals)
  except (Stopped, KeyboardInterrupt) as error:
    return report(error)
  finally:
    signals.uninstall()
