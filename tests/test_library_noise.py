"""Libraries' noise at a failure: one line per distinct message, however often it repeats."""
import gc
import logging
import sys
import threading

import pytest

from rir_jax import library_noise


@pytest.fixture
def hooks(monkeypatch):
  """cut_to_one_line's hooks, undone after the test; its memory of what it logged empty."""
  monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
  monkeypatch.setattr(threading, "excepthook", threading.excepthook)
  monkeypatch.setattr(library_noise, "_logged", set())
  library_noise.cut_to_one_line()


class _ClosedLoopAtExit:
  """What an open connection does when the interpreter shuts its event loop first."""

  def __init__(self, message):
    self.message = message

  def __del__(self):
    raise RuntimeError(self.message)


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.name == library_noise.__name__]


def test_a_failure_ignored_many_times_is_logged_once(hooks, caplog):
  with caplog.at_level(logging.WARNING):
    for message in ["Event loop is closed"] * 40 + ["another failure\nits traceback"]:
      _ClosedLoopAtExit(message)
      gc.collect()
  assert _warnings(caplog) == ["ignored: RuntimeError: Event loop is closed",
                               "ignored: RuntimeError: another failure"]


def test_a_failing_thread_is_one_line_once(hooks, caplog):
  def fail():
    raise OSError("No space left on device\nmore")

  with caplog.at_level(logging.WARNING):
    for _ in range(3):
      thread = threading.Thread(target=fail, name="save")
      thread.start()
      thread.join()
  assert _warnings(caplog) == ["in thread save: OSError: No space left on device"]
