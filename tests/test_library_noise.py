"""Libraries' noise at a failure: one line per distinct message, however often it repeats."""
import asyncio
import gc
import logging
import sys
import threading
import types

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


@pytest.fixture
def reported(monkeypatch):
  """What reaches the hook that quiet_abandoned_reads wraps; both hooks undone after."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  asyncio_log = logging.getLogger("asyncio")
  monkeypatch.setattr(asyncio_log, "filters", list(asyncio_log.filters))
  library_noise.quiet_abandoned_reads()
  library_noise.quiet_abandoned_reads()  # twice is once
  return seen


def _unraisable(error, obj=None):
  return types.SimpleNamespace(exc_type=type(error), exc_value=error,
                               exc_traceback=error.__traceback__, err_msg=None, object=obj)


def _raised(function):
  try:
    function()
  except Exception as error:  # noqa: BLE001 - the test wants whatever it raised
    return error
  raise AssertionError("did not raise")


def test_reads_a_failed_restore_leaves_in_flight_report_nothing(reported):
  code = compile("async def read():\n  pass\n", "/site-packages/orbax/checkpoint/x.py", "exec")
  namespace = {}
  exec(code, namespace)  # noqa: S102 - a coroutine that Orbax's file would have made
  orbax_read = namespace["read"]()
  closed = asyncio.new_event_loop()
  closed.close()
  completion_on_closed_loop = _raised(lambda: closed.call_soon_threadsafe(print))
  ours = RuntimeError("Event loop is closed")  # raised elsewhere: still reported
  for unraisable in (_unraisable(Exception("OUT_OF_RANGE"), orbax_read),
                     _unraisable(completion_on_closed_loop), _unraisable(ours)):
    sys.unraisablehook(unraisable)
  orbax_read.close()
  assert [u.exc_value for u in reported] == [ours]


def test_asyncio_drops_never_retrieved_errors_of_native_futures_only(reported, monkeypatch):
  asyncio_log = logging.getLogger("asyncio")
  logged = []
  handler = logging.Handler()
  handler.emit = lambda record: logged.append(record.exc_info[1])
  monkeypatch.setattr(asyncio_log, "handlers", [handler])
  native = ValueError("OUT_OF_RANGE: Error reading")  # set by TensorStore: no frames
  ours = _raised(lambda: 1 / 0)
  for error in (native, ours):
    asyncio_log.error("Future exception was never retrieved",
                      exc_info=(type(error), error, error.__traceback__))
  assert logged == [ours]
