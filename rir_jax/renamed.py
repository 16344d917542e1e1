"""Config keys and values that were renamed: read under their new names, with a note.

`conv_impl` (xla | onednn | auto) is `kernels` (xla | cpu_library | auto): onednn ran
oneDNN's convolutions and the project's batch-norm kernels, the CPU library's whole.
Flags, config files, and the configs saved in old workdirs and results keep working.
"""
from __future__ import annotations

import functools
import logging

import ml_collections

from rir_jax.kernels import select

log = logging.getLogger(__name__)

OLD_KEY, NEW_KEY = "conv_impl", "kernels"


def _new_value(old: str) -> str:
  return select.OLD_NAMES.get(old, old)


def _note(where: str, old: str) -> None:
  log.warning("%s%s=%s is deprecated: it reads as %s=%s", where, OLD_KEY, old, NEW_KEY,
              _new_value(old))


@functools.cache  # one note per value: a study reads many saved configs
def _note_saved(old: str) -> None:
  _note("a saved config's ", old)


def flags(argv: list[str]) -> list[str]:
  """argv with `--config.conv_impl=X` as `--config.kernels=Y`."""
  renamed = []
  for arg in argv:
    key, equals, value = arg.partition("=")
    if key.lstrip("-") == f"config.{OLD_KEY}":
      if equals:
        _note("--config.", value)
      arg = f"--config.{NEW_KEY}" + (f"={_new_value(value)}" if equals else "")
    renamed.append(arg)
  return renamed


def config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`cfg` (a copy where anything changes) with `conv_impl` as `kernels`, and `kernels`
  by its current value's name (conv_impl's onednn: cpu_library)."""
  if OLD_KEY not in cfg and cfg.get(NEW_KEY) not in select.OLD_NAMES:
    return cfg
  cfg = cfg.copy_and_resolve_references()
  with cfg.unlocked():
    if OLD_KEY in cfg:
      old = cfg[OLD_KEY]
      _note("config.", old)
      del cfg[OLD_KEY]
      cfg[NEW_KEY] = _new_value(old)
    else:
      cfg[NEW_KEY] = select.canonical(cfg[NEW_KEY])
  return cfg


def saved(config_json: dict) -> dict:
  """A saved config's JSON (config.json, result.json) with its old keys under new names."""
  if OLD_KEY not in config_json:
    return config_json
  old = config_json[OLD_KEY]
  _note_saved(old)
  renamed = {k: v for k, v in config_json.items() if k != OLD_KEY}
  renamed.setdefault(NEW_KEY, _new_value(old))
  return renamed
