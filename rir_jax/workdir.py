"""The run's folder: checked before anything is written, then claimed with config.json."""
from __future__ import annotations

import json
import os
import pathlib
import tempfile

import ml_collections

from rir_jax import bucket_lock, checkpoint, models, renamed, storage, workdir_lock

CONFIG_FILE = "config.json"
# Keys that may change between a run and its resumption without changing its results:
# where the data lives (a copy on another disk, a bucket's mirror) is not what it is; how
# often checkpoints are saved, and how many are kept, changes nothing a step computes (a
# run preempted often resumes with more frequent ones); how many steps go in one dispatch
# changes at most their rounding, as a device layout does, and so do the kernels (the
# same math: a run moved to a machine without the CPU library, a GPU box, resumes there
# on XLA's; kernels.json warns that it is not bit-identical).
_FREE_KEYS = ("allow_config_change", "checkpoint_every_steps", "data.data_dir",
              "data.manual_dir", "keep_checkpoints", "kernels", "steps_per_dispatch")
# Keys added after workdirs were first written, with the value their absence stood for:
# a workdir that lacks them resumes as long as the new config keeps that value.
_ADDED_KEYS = {
    "data.validation_examples": 0,
    "data.validation_seed": 0,
    "init_from": None,
    "init_batch_stats": True,
    "init_new_head": False,
    "kernels": "xla",  # before conv_impl (now kernels), convolutions ran on XLA alone
    "stop_at_accuracy": 0.0,
}


class WorkdirError(ValueError):
  """The workdir cannot be used for this run; the message says why and what to do."""


def config_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


# Keys the processes of one multi-process run may hold apart: each host's own data paths.
_PER_PROCESS_KEYS = ("allow_config_change", "data.data_dir", "data.manual_dir")


def _differences(old: dict, new: dict, prefix: str = "", free=_FREE_KEYS) -> list[str]:
  keys = sorted(set(old) | set(new))
  diffs = []
  for key in keys:
    name = f"{prefix}{key}"
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += _differences(a, b, name + ".", free)
    elif a != b and name not in free:
      diffs.append(f"{name} ({a!r} -> {b!r})")
  return diffs


def _with_defaults(saved: dict) -> dict:
  """A config's JSON with the keys it lacks filled in as they are in effect, and renamed
  keys (rir_jax.renamed) under their new names.

  Configs used to hold only the model keys they changed (a config file may still): the
  model's own defaults fill in the rest, so a missing key equal to its default is not
  a change, whichever side lacks it.
  """
  filled = renamed.saved(json.loads(json.dumps(saved)))
  for dotted, value in _ADDED_KEYS.items():
    *parents, key = dotted.split(".")
    node = filled
    for parent in parents:
      node = node.setdefault(parent, {})
    node.setdefault(key, value)
  model = filled.get("model", {})
  if model.get("name") in models.MODEL_NAMES:
    defaults = json.loads(json.dumps(models.model_defaults(model["name"])))
    filled["model"] = {**defaults, **model}
  return filled


def saved_kernels(saved: dict) -> str:
  """The kernels a saved config.json names (the first version's, without the key: xla)."""
  return _with_defaults(saved)["kernels"]


def process_differences(first: dict, config: ml_collections.ConfigDict) -> list[str]:
  """What `config` changes from process 0's (its JSON, `first`) in a multi-process run:
  anything but each host's data paths, as every process must run the same programs."""
  return _differences(_with_defaults(first), _with_defaults(config_json(config)),
                      free=_PER_PROCESS_KEYS)


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """What `config` changes from a saved config.json (keys added since count as their
  old default; keys free to change are ignored): empty where a run may continue."""
  return _differences(_with_defaults(saved), _with_defaults(config_json(config)))


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


_TRAINING_REMEDY = "restore it, or move it away to resume with this command's config"


def saved_config(workdir: pathlib.Path, remedy: str = _TRAINING_REMEDY) -> dict | None:
  """The config a workdir's run was started with (None: a new workdir); `remedy` ends the
  message where it is damaged."""
  path = workdir / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return storage.read_json_object(path)
  except storage.DamagedFile as error:
    raise WorkdirError(f"{error}; {remedy}") from error


def checkpoints_without_config(workdir: storage.Path) -> str | None:
  """What a workdir copied in part says of itself: None where it holds config.json or no
  checkpoints (a run writes config.json before its first checkpoint), else a message."""
  if (workdir / CONFIG_FILE).exists():
    return None
  newest = checkpoint.newest_step(workdir / "checkpoints")
  if newest is None:
    return None
  return (f"--workdir={workdir} holds checkpoints (the newest of step {newest}) but no "
          f"{CONFIG_FILE}, the config they were trained with (copied in part?)")


def check(workdir: storage.Path, config: ml_collections.ConfigDict) -> None:
  """Raises WorkdirError without touching anything on disk."""
  if storage.is_remote(workdir):
    _check_bucket(workdir)
  else:
    _check_local_folder(workdir)
  orphaned = checkpoints_without_config(workdir)
  if orphaned and not config.allow_config_change:
    raise WorkdirError(f"{orphaned}: this command's config cannot be checked against it; "
                       f"copy {CONFIG_FILE} back, or add --config.allow_config_change=True "
                       "to resume the checkpoints with this command's config")
  saved = saved_config(workdir)
  if saved is not None and not config.allow_config_change:
    diffs = config_differences(saved, config)
    if diffs:
      raise WorkdirError(
          f"--workdir={workdir} holds a run with another config ({'; '.join(diffs[:3])}"
          f"{'; ...' if len(diffs) > 3 else ''}); use a new workdir or "
          "--config.allow_config_change=True to resume it anyway")


def _check_bucket(workdir: storage.Path) -> None:
  try:
    storage.check_bucket(workdir)
  except FileNotFoundError as error:
    raise WorkdirError(f"--workdir={workdir}: {error}") from error


def _check_local_folder(workdir: pathlib.Path) -> None:
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


def claim(workdir: storage.Path, config: ml_collections.ConfigDict, *, main: bool):
  """Creates the folder, takes its lock and, for a new run, records its config.

  Only the main process writes. A workdir that already holds a config keeps it until
  `record_config` (once the run's checkpoint has restored into the new config).
  Returns the lock (None on other processes), held until the process ends.
  """
  workdir.mkdir(parents=True, exist_ok=True)  # on gs:// folders are implicit: a no-op
  if not main:
    return None
  lock = (bucket_lock.acquire(workdir) if storage.is_remote(workdir)
          else workdir_lock.acquire(workdir))
  if not (workdir / CONFIG_FILE).exists():
    record_config(workdir, config)
  return lock


def record_config(workdir: storage.Path, config: ml_collections.ConfigDict) -> None:
  """Writes the resolved config as the workdir's own (atomically; only when it differs)."""
  resolved = config_json(config)
  path = workdir / CONFIG_FILE
  if path.exists() and json.loads(path.read_text()) == resolved:
    return
  storage.write_atomic(path, json.dumps(resolved, indent=2, sort_keys=True) + "\n")
