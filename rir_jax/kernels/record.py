"""Which kernels a workdir's run trained on, so that a resume does not change them silently.

`kernels=auto` resolves per process (the CPU library where it loads, else XLA), and the
two round differently: a resume on other kernels is not bit-identical to
an uninterrupted run. The resolved choice is kept in `WORKDIR/kernels.json`; a resume
takes it again where it can, and says so where it cannot.
"""
from __future__ import annotations

import json
import logging
import pathlib

import ml_collections

from rir_jax import renamed, workdir as workdir_lib
from rir_jax.kernels import select

log = logging.getLogger(__name__)

RECORD_FILE = "kernels.json"


def _record(workdir: pathlib.Path) -> str | None:
  """The kernels kernels.json records; None where there is none (a new run, one from
  before records, or a copy without it)."""
  try:
    record = json.loads((workdir / RECORD_FILE).read_text())
    return renamed.saved(record)["kernels"]  # an older record holds conv_impl
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _named(workdir: pathlib.Path) -> str | None:
  """The kernels the workdir's config.json names; None where it names auto."""
  saved = workdir_lib.saved_config(workdir)
  named = workdir_lib.saved_kernels(saved) if saved is not None else "auto"
  return None if named == "auto" else select.canonical(named)


def settle(config: ml_collections.ConfigDict, workdir: pathlib.Path, *,
           write: bool) -> ml_collections.ConfigDict:
  """The config to train with: `kernels` resolved, as recorded where that can run."""
  resolved = select.resolve(config.kernels)
  record = _record(workdir)
  recorded = record if record is not None else _named(workdir)
  if recorded not in (None, resolved):
    # auto's choice can only move from xla to cpu_library (a library that loads now): xla
    # runs everywhere, so the recorded choice is kept. Anything else must change.
    if config.kernels == "auto" and recorded == "xla":
      log.info("kernels auto: keeping xla, as recorded in %s, so the resumed run stays "
               "bit-identical", workdir)
      resolved = recorded
    else:
      log.warning("this run's kernels are %s, the workdir's run used %s (%s): the "
                  "resumed run will not be bit-identical to an uninterrupted one",
                  resolved, recorded, workdir)
  if write and record != resolved:
    (workdir / RECORD_FILE).write_text(json.dumps({"kernels": resolved}) + "\n")
  settled = config.copy_and_resolve_references()
  settled.kernels = resolved
  return settled
