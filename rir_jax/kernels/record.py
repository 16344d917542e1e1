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

from rir_jax import renamed
from rir_jax.kernels import select

log = logging.getLogger(__name__)

RECORD_FILE = "kernels.json"


def _recorded(workdir: pathlib.Path) -> str | None:
  try:
    record = json.loads((workdir / RECORD_FILE).read_text())
    return renamed.saved(record)["kernels"]  # an older record holds conv_impl
  except (OSError, ValueError, KeyError, TypeError):
    return None  # no record (a new run, or one from before records): nothing to keep


def settle(config: ml_collections.ConfigDict, workdir: pathlib.Path, *,
           write: bool) -> ml_collections.ConfigDict:
  """The config to train with: `kernels` resolved, as recorded where that can run."""
  resolved = select.resolve(config.kernels)
  recorded = _recorded(workdir)
  if recorded not in (None, resolved):
    # auto's choice can only move from xla to cpu_library (a library that loads now): xla
    # runs everywhere, so the recorded choice is kept. Anything else must change.
    if config.kernels == "auto" and recorded == "xla":
      log.info("kernels auto: keeping xla, as recorded in %s, so the resumed run stays "
               "bit-identical", workdir / RECORD_FILE)
      resolved = recorded
    else:
      log.warning("this run's kernels are %s, the workdir's run used %s (%s): the "
                  "resumed run will not be bit-identical to an uninterrupted one",
                  resolved, recorded, workdir / RECORD_FILE)
  if write and recorded != resolved:
    (workdir / RECORD_FILE).write_text(json.dumps({"kernels": resolved}) + "\n")
  settled = config.copy_and_resolve_references()
  settled.kernels = resolved
  return settled
