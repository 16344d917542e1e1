"""The run's folder: checked before anything is written, then claimed with config.json."""
from __future__ import annotations

import json
import pathlib
import tempfile

import ml_collections

from rir_jax import models, storage

CONFIG_FILE = "config.json"
# Keys that may change between a run and its resumption without changing its results.
_FREE_KEYS = ("allow_config_change",)
# Keys added after workdirs were first written, with the value their absence stood for:
# a workdir that lacks them resumes as long as the new config keeps that value.
_ADDED_KEYS = {
    "data.validation_examples": 0,
    "data.validation_seed": 0,
    "init_from": None,
    "init_batch_stats": True,
    "init_new_head": False,
}


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


def _with_defaults(saved: dict) -> dict:
  """A config's JSON with the keys it lacks filled in as they are in effect.

  Configs used to hold only the model keys they changed (a config file may still): the
  model's own defaults fill in the rest, so a missing key equal to its default is not
  a change, whichever side lacks it.
  """
  filled = json.loads(json.dumps(saved))
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


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """What `config` changes from a saved config.json (keys added since count as their
  old default; keys free to change are ignored): empty where a run may continue."""
  return _differences(_with_defaults(saved), _with_defaults(config_json(config)))


def check(workdir: storage.Path, config: ml_collections.ConfigDict) -> None:
  """Raises WorkdirError without touching anything on disk."""
  if storage.is_remote(workdir):
    _check_bucket(workdir)
  else:
    _check_local_folder(workdir)
  saved = workdir / CONFIG_FILE
  if saved.exists() and not config.allow_config_change:
    diffs = config_differences(json.loads(saved.read_text()), config)
    if diffs:
      raise WorkdirError(
          f"--workdir={workdir} holds a run with another config ({'; '.join(diffs[:3])}"
          f"{'; ...' if len(diffs) > 3 else ''}); use a new workdir or "
          "--config.allow_config_change=True to resume it anyway")


def _check_bucket(workdir: storage.Path) -> None:
  try:
    storage.check_bucket(workdir)
  except Exception as error:  # noqa: BLE001 - credentials, network: all mean "cannot use"
    raise WorkdirError(f"--workdir={workdir}: {' '.join(str(error).split())}") from error


def _check_local_folder(workdir: pathlib.Path) -> None:
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"--workdir={workdir} is a file; give a folder path")
  existing = workdir
  while not existing.exists():
    existing = existing.parent
  try:  # a real probe: root passes os.access checks on read-only file systems
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as error:
    raise WorkdirError(f"--workdir={workdir}: cannot write in {existing} ({error.strerror}); "
                       "choose a folder you can write to") from error


def claim(workdir: storage.Path, config: ml_collections.ConfigDict, *, write: bool) -> None:
  """Creates the folder and records the resolved config (main process only writes)."""
  workdir.mkdir(parents=True, exist_ok=True)  # on gs:// folders are implicit: a no-op
  if write:
    storage.write_atomic(workdir / CONFIG_FILE,
                         json.dumps(config_json(config), indent=2, sort_keys=True) + "\n")
