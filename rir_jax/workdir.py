"""The run's folder: checked before anything is written, then claimed with config.json."""
from __future__ import annotations

import json
import os
import pathlib
import tempfile

import ml_collections

from rir_jax import workdir_lock

CONFIG_FILE = "config.json"
# Keys that may change between a run and its resumption without changing its results.
_FREE_KEYS = ("allow_config_change",)


class WorkdirError(ValueError):
  """The workdir cannot be used for this run; the message says why and what to do."""


def config_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  keys = sorted(set(old) | set(new))
  diffs = []
  for key in keys:
    name = f"{prefix}{key}"
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += _differences(a, b, name + ".")
    elif a != b and key not in _FREE_KEYS:
      diffs.append(f"{name} ({a!r} -> {b!r})")
  return diffs


# What a run keeps in its workdir, and what kind of entry each must be.
_FOLDERS = ("checkpoints", "tensorboard")
_FILES = (CONFIG_FILE, "metrics.jsonl")


def _probe_writable(folder: pathlib.Path, what: str) -> None:
  try:  # a real probe: root passes os.access checks on read-only file systems
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as error:
    raise WorkdirError(f"{what}: cannot write in {folder} ({error.strerror}); "
                       "choose a folder you can write to") from error


def _check_entries(workdir: pathlib.Path) -> None:
  """The run's own files and folders, where they exist, are of the right kind and writable."""
  for name in _FOLDERS:
    path = workdir / name
    if path.exists() or path.is_symlink():
      if not path.is_dir():
        raise WorkdirError(f"{path} is not a folder (the run keeps its {name} there); "
                           "move it away or use a new --workdir")
      _probe_writable(path, f"--workdir={workdir}")
  for name in _FILES:
    path = workdir / name
    if (path.exists() or path.is_symlink()) and not path.is_file():
      raise WorkdirError(f"{path} is not a file; move it away or use a new --workdir")


def saved_config(workdir: pathlib.Path) -> dict | None:
  """The config a workdir's run was started with (None: a new workdir)."""
  path = workdir / CONFIG_FILE
  if not path.exists():
    return None
  try:
    saved = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, ValueError) as error:
    raise WorkdirError(f"{path} is damaged ({type(error).__name__}: {error}); restore it, or "
                       "move it away to resume with this command's config") from error
  if not isinstance(saved, dict):
    raise WorkdirError(f"{path} is damaged (not a JSON object); restore it, or move it away "
                       "to resume with this command's config")
  return saved


def check(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """Raises WorkdirError without touching anything on disk."""
  if workdir.is_symlink() and not workdir.exists():
    raise WorkdirError(f"--workdir={workdir} is a link to {os.readlink(workdir)}, which does "
                       "not exist; create its target or give another folder")
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"--workdir={workdir} is a file; give a folder path")
  existing = workdir
  while not existing.exists():
    existing = existing.parent
  _probe_writable(existing, f"--workdir={workdir}")
  if not workdir.exists():
    return
  _check_entries(workdir)
  saved = saved_config(workdir)
  if saved is not None and not config.allow_config_change:
    diffs = _differences(saved, config_json(config))
    if diffs:
      raise WorkdirError(
          f"--workdir={workdir} holds a run with another config ({'; '.join(diffs[:3])}"
          f"{'; ...' if len(diffs) > 3 else ''}); use a new workdir or "
          "--config.allow_config_change=True to resume it anyway")


def _write_atomically(path: pathlib.Path, text: str) -> None:
  """All of `text` or nothing at `path`: a full disk leaves neither a cut file nor a .tmp."""
  tmp = path.with_name(path.name + ".tmp")
  try:
    tmp.write_text(text)
    tmp.replace(path)
  except OSError:
    tmp.unlink(missing_ok=True)
    raise


def claim(workdir: pathlib.Path, config: ml_collections.ConfigDict, *, main: bool):
  """Creates the folder, takes its lock and, for a new run, records its config.

  Only the main process writes. A workdir that already holds a config keeps it until
  `record_config` (once the run's checkpoint has restored into the new config).
  Returns the lock (None on other processes), held until the process ends.
  """
  workdir.mkdir(parents=True, exist_ok=True)
  if not main:
    return None
  lock = workdir_lock.acquire(workdir)
  if not (workdir / CONFIG_FILE).exists():
    record_config(workdir, config)
  return lock


def record_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """Writes the resolved config as the workdir's own (atomically; only when it differs)."""
  resolved = config_json(config)
  path = workdir / CONFIG_FILE
  if path.exists() and json.loads(path.read_text()) == resolved:
    return
  _write_atomically(path, json.dumps(resolved, indent=2, sort_keys=True) + "\n")
