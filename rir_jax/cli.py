"""What the model commands (evaluate, predict, export) share: argument parsing, the
errors a user can fix (one line and exit 2, rir_jax.errors), the run's config, and how
their output ends where it cannot be written.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Callable, NoReturn

import ml_collections

from rir_jax import data, errors, exported, loading, memory_check, preprocess, storage
from rir_jax import workdir as workdir_lib
from rir_jax.errors import UsageError

# What a user can fix: a bad path, step, split, data folder or image.
USAGE_ERRORS = (loading.LoadError, data.DataError, exported.ExportError,
                preprocess.ImageError, workdir_lib.WorkdirError)
_DATA_PREFIX = "--config.data."


class Parser(argparse.ArgumentParser):
  """argparse with its errors as one line (no usage block) and exit code 2."""

  def error(self, message: str) -> NoReturn:
    errors.fail(f"{message} (see {self.prog} --help)")


def path_argument(text: str) -> storage.Path:
  """argparse's type for a path: a local path or gs:// URL, another URL in one line."""
  try:
    return storage.user_path(text)
  except storage.UnsupportedURL as error:
    raise argparse.ArgumentTypeError(str(error)) from None


def quiet_libraries() -> None:
  """Our lines only on stderr: Orbax and absl log every restore at INFO/WARNING."""
  logging.getLogger("absl").setLevel(logging.ERROR)
  logging.getLogger("rir_jax").setLevel(logging.WARNING)


def split_data_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """(other arguments, {key: text}) for each `--config.data.KEY=VALUE` in argv."""
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith(_DATA_PREFIX):
      key, sep, value = arg[len(_DATA_PREFIX):].partition("=")
      if not sep:
        raise UsageError(f"{arg} needs a value: {_DATA_PREFIX}KEY=VALUE")
      overrides[key] = value
    else:
      rest.append(arg)
  return rest, overrides


def run_config(workdir, overrides: dict[str, str]) -> ml_collections.ConfigDict:
  """The run's config.json, with `config.data` keys changed as the command line says."""
  saved = workdir_lib.saved_config(workdir, remedy="copy it again from the run")
  if saved is None:
    orphaned = workdir_lib.checkpoints_without_config(workdir)
    raise UsageError(f"{orphaned}; copy it again from the run" if orphaned else
                     f"--workdir={workdir} has no config.json: not a training workdir")
  config = ml_collections.ConfigDict(saved)
  for key, text in overrides.items():
    if key not in config.data:
      raise UsageError(f"unknown key --config.data.{key}; the keys are: "
                       f"{', '.join(sorted(config.data.keys()))}")
    config.data[key] = _typed(key, text, config.data[key])
  return config


def _typed(key: str, text: str, current):
  """`text` as the type the key holds (a path may replace a None)."""
  if isinstance(current, bool):
    if text.lower() not in ("true", "false"):
      raise UsageError(f"--config.data.{key}={text} must be True or False")
    return text.lower() == "true"
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError as error:
      raise UsageError(f"--config.data.{key}={text} must be an integer") from error
  return text


def run(main: Callable[[list[str]], int]) -> NoReturn:
  """Exits with `main(sys.argv[1:])`'s code, its output flushed.

  Where the output cannot be written, the command ends as a command-line tool does, not
  in a traceback: a reader that has gone (`... | head -1`) ends it quietly with 141, as
  SIGPIPE ends other tools; a full disk under a redirected output, in one line, exit 1.
  Either way standard output goes to /dev/null first, or Python's own flush at exit
  would fail once more. Ctrl-C is one line and 130, as for other tools, not a traceback:
  the commands write their files whole or not at all.
  """
  try:
    code = main(sys.argv[1:])
    sys.stdout.flush()
  except KeyboardInterrupt:
    errors.fail("stopped by SIGINT before it finished; no file is left half-written",
                128 + signal.SIGINT)
  except BrokenPipeError:
    _drop_stdout()
    sys.exit(128 + signal.SIGPIPE)
  except OSError as error:
    _drop_stdout()
    errors.fail(f"cannot write {error.filename or 'standard output'} ({error.strerror or error})",
                errors.ExitCode.FAILURE)
  except Exception as error:
    memory = memory_check.out_of_memory(error, "free some, or run it where there is more")
    if memory is None:
      raise
    errors.fail(memory, errors.ExitCode.FAILURE)
  sys.exit(code)


def _drop_stdout() -> None:
  os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
