"""One self-contained file per trained model: `python -m rir_jax.export` writes it.

The file is one msgpack map, written with flax.serialization.msgpack_serialize:

    {"format": "rir-jax-export", "version": 1,
     "card": "<JSON text>",       WORKDIR/model.json plus "step" and "source"
     "params": {...}, "batch_stats": {...}}   flax's variable trees, arrays as
                                              flax's msgpack ndarray extension

`flax.serialization.msgpack_restore(open(FILE, "rb").read())` reads it back anywhere
flax is installed; `rir_jax.load(FILE)` rebuilds the model from the card.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
from flax import serialization

from rir_jax import storage

FORMAT = "rir-jax-export"
VERSION = 1


class ExportError(ValueError):
  """A file that is not a readable export; the message is one line."""


def write(path: pathlib.Path, card: dict, variables: dict) -> int:
  """Writes aside, then renames: a reader never sees half a file, a full disk leaves none.
  Returns the file's size in bytes."""
  payload = {"format": FORMAT, "version": VERSION, "card": json.dumps(card, sort_keys=True),
             "params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  content = serialization.msgpack_serialize(_numpy(payload))
  storage.write_atomic(path, content)
  return len(content)


def read(path: pathlib.Path) -> tuple[dict, dict]:
  """(card, variables) of an export file."""
  try:
    payload = serialization.msgpack_restore(path.read_bytes())
  except Exception as error:  # noqa: BLE001 - msgpack raises many kinds on a damaged file
    raise ExportError(f"{path} is not a rir-jax export file, or is a damaged or truncated one "
                      f"({type(error).__name__})") from error
  if not isinstance(payload, dict) or payload.get("format") != FORMAT:
    raise ExportError(f"{path} is not a rir-jax export file (no '{FORMAT}' header)")
  if payload.get("version") != VERSION:
    raise ExportError(f"{path} is export format version {payload.get('version')}; this "
                      f"rir_jax reads version {VERSION}")
  missing = [key for key in ("card", "params", "batch_stats") if key not in payload]
  if missing:
    raise ExportError(f"{path} is a damaged export: it lacks {', '.join(missing)}")
  try:
    card = json.loads(payload["card"])
  except (TypeError, ValueError) as error:
    raise ExportError(f"{path} is a damaged export: its card is not JSON ({error})") from None
  if not (isinstance(card, dict) and isinstance(card.get("step"), int)):
    raise ExportError(f"{path} is a damaged export: its card names no step")
  return card, {"params": payload["params"], "batch_stats": payload["batch_stats"]}


def _numpy(tree):
  """Plain numpy arrays (device arrays and bfloat16 included) in plain dicts."""
  if isinstance(tree, dict):
    return {k: _numpy(v) for k, v in tree.items()}
  return tree if isinstance(tree, (str, int)) else np.asarray(tree)
