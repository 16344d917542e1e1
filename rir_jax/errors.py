"""What a failure looks like to a user: one line on stderr and an exit code.

0 done; 2 a mistake the user can fix (flags, config, data, workdir), found before anything
is written; 1 a failure while working; 128 + N stopped by signal N (143 SIGTERM, 130
SIGINT) at a step boundary, that step checkpointed (rir_jax/stopping.py).
"""
from __future__ import annotations

import enum
import sys
from typing import NoReturn


class ExitCode(enum.IntEnum):
  OK = 0
  FAILURE = 1
  USAGE = 2


class UsageError(ValueError):
  """A mistake the user can fix: bad flags, arguments or environment. Exit 2."""


class ConfigError(UsageError):
  """A config value that cannot work; the message says which key and what to do."""


def one_line(error: BaseException | str) -> str:
  """The message on one line (messages quote other errors, which may span lines), without
  the TensorStore spec (kilobytes of JSON) Orbax's errors carry."""
  text = str(error).split(" [tensorstore_spec")[0].split(" See full TensorStore details")[0]
  return " ".join(text.split()) or type(error).__name__


def innermost(error: BaseException) -> BaseException:
  """The exception at the bottom of a chain: libraries wrap the one that says what went
  wrong (a config file's own error, TensorStore's reason a read failed) in layers."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  return error


def reason(error: BaseException) -> str:
  """'Type: message' of the innermost error, on one line: why a library call failed."""
  root = innermost(error)
  return f"{type(root).__name__}: {one_line(root)}"


def fail(message: BaseException | str, code: int = ExitCode.USAGE) -> NoReturn:
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(int(code))
