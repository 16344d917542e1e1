"""Libraries' tracebacks cut to one line each, so that the command's own error line shows.

A full disk under an Orbax save logs the same failure three times with its whole stack
(from the save thread, the finalize thread and asyncio's loop), hundreds of lines above
the one line the command prints about it. Their first lines still say what happened.
A failure ignored at shutdown (asyncio's "Event loop is closed", once per open
connection) or in a dying thread is logged once however often it repeats. The reads a
failed checkpoint restore leaves in flight report nothing at all (`quiet_abandoned_reads`).
"""
from __future__ import annotations

import logging
import sys
import threading
import traceback

_OWN_LOGGER = "rir_jax"
_MAX_CHARS = 300


def first_line(text: str) -> str:
  lines = text.strip().splitlines()
  return (lines[0] if lines else "")[:_MAX_CHARS]


class _OneLine(logging.Filter):
  """Strips the traceback and every line but the first from other packages' records."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.name.startswith(_OWN_LOGGER):
      return True
    if record.exc_info or record.stack_info or "\n" in str(record.msg):
      if record.exc_info and record.exc_info[1] is not None:
        cause = f" ({type(record.exc_info[1]).__name__}: {first_line(str(record.exc_info[1]))})"
      else:
        cause = ""
      record.msg, record.args = first_line(record.getMessage()) + cause, ()
      record.exc_info = record.exc_text = record.stack_info = None
    return True


_logged: set[str] = set()
_logged_lock = threading.Lock()


def _warn_once(message: str) -> None:
  with _logged_lock:
    if message in _logged:
      return
    _logged.add(message)
  logging.getLogger(__name__).warning("%s", message)


def _thread_failure(args) -> None:
  if args.exc_type is SystemExit:
    return
  _warn_once(f"in thread {getattr(args.thread, 'name', '?')}: {args.exc_type.__name__}: "
             f"{first_line(str(args.exc_value))}")


def _unraisable(unraisable) -> None:
  _warn_once(f"ignored: {type(unraisable.exc_value).__name__}: "
             f"{first_line(str(unraisable.exc_value))}")


def cut_to_one_line() -> None:
  """Installs the filter on the root logger's handlers, and one-line thread hooks."""
  for handler in logging.getLogger().handlers:
    handler.addFilter(_OneLine())
  threading.excepthook = _thread_failure
  sys.unraisablehook = _unraisable


def _from_orbax_or_native(error: BaseException | None) -> bool:
  """Raised in Orbax's code, or set by native code (a TensorStore future: no Python frame)."""
  if error is None:
    return False
  frames = traceback.extract_tb(error.__traceback__)
  return not frames or any("/orbax/" in frame.filename for frame in frames)


def _abandoned_read(unraisable) -> bool:
  """An ignored failure of a read left in flight: its coroutine collected unawaited, or
  its completion posted to the event loop Orbax has closed."""
  code = getattr(unraisable.object, "cr_code", None)
  if code is not None and "/orbax/" in code.co_filename:
    return True
  return isinstance(unraisable.exc_value, RuntimeError) and any(
      frame.name == "call_soon_threadsafe"
      for frame in traceback.extract_tb(unraisable.exc_traceback))


class _NotAnAbandonedRead(logging.Filter):
  """Drops asyncio's "exception was never retrieved" for a read left in flight."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not ("never retrieved" in str(record.msg) and _from_orbax_or_native(error))


def quiet_abandoned_reads() -> None:
  """Lets a failed checkpoint restore end in the caller's one line, and nothing after it.

  When one array of a checkpoint does not read (a file truncated by a partial copy),
  Orbax raises at once and closes its event loop while the other arrays' reads are still
  in flight. As they end, each reports its own exception, "never retrieved" or ignored
  on the closed loop: tracebacks, for seconds after the caller has reported the failure
  (or gone on from an older checkpoint), of a failure the caller has already handled.
  Call it before a restore, so that none slips out between the failure and the call.
  """
  asyncio_log = logging.getLogger("asyncio")
  if not any(isinstance(f, _NotAnAbandonedRead) for f in asyncio_log.filters):
    asyncio_log.addFilter(_NotAnAbandonedRead())
  if getattr(sys.unraisablehook, "quiets_abandoned_reads", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable) -> None:
    if not _abandoned_read(unraisable):
      previous(unraisable)

  hook.quiets_abandoned_reads = True
  sys.unraisablehook = hook
