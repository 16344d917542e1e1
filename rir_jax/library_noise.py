"""Libraries' tracebacks cut to one line each, so that the command's own error line shows.

A full disk under an Orbax save logs the same failure three times with its whole stack
(from the save thread, the finalize thread and asyncio's loop), hundreds of lines above
the one line the command prints about it. Their first lines still say what happened.
A failure ignored at shutdown (asyncio's "Event loop is closed", once per open
connection) or in a dying thread is logged once however often it repeats.
"""
from __future__ import annotations

import logging
import sys
import threading

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
