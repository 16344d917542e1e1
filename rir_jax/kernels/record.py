"""Which kernels a workdir's run trained on, so that a resume does not change them silently.

`conv_impl=auto` resolves per process (oneDNN on a CPU where the library loads, else
XLA), and the two round differently: a resume on other kernels is not bit-identical to
an uninterrupted run. The resolved choice is kept in `WORKDIR/kernels.json`; a resume
takes it again where it can, and says so where it cannot.
"""
from __future__ import annotations

import json
import logging
import pathlib

import ml_collections

from rir_jax.kernels import select

log = logging.getLogger(__name__)

RECORD_FILE = "kernels.json"


def _recorded(workdir: pathlib.Path) -> str | None:
  try:
    return json.loads((workdir / RECORD_FILE).read_text())["conv_impl"]
  except (OSError, ValueError, KeyError, TypeError):
    return None  # no record (a new run, or one from before records): nothing to keep


def settle(config: ml_collections.ConfigDict, workdir: pathlib.Path, *,
           write: bool) -> ml_collections.ConfigDict:
  """The config to train with: `conv_impl` resolved, as recorded where that can run."""
  resolved = select.resolve(config.conv_impl)
  recorded = _recorded(workdir)
  if recorded not in (None, resolved):
    # auto's choice can only move from xla to onednn (a library that loads now): xla
    # runs everywhere, so the recorded choice is kept. Anything else must change.
    if config.conv_impl == "auto" and recorded == "xla":
      log.info("conv_impl auto: keeping xla, as recorded in %s, so the resumed run stays "
               "bit-identical", workdir / RECORD_FILE)
      resolved = recorded
    else:
      log.warning("this run's convolutions run on %s, the workdir's run used %s (%s): the "
                  "resumed run will not be bit-identical to an uninterrupted one",
                  resolved, recorded, workdir / RECORD_FILE)
  if write and recorded != resolved:
    (workdir / RECORD_FILE).write_text(json.dumps({"conv_impl": resolved}) + "\n")
  settled = config.copy_and_resolve_references()
  settled.conv_impl = resolved
  return settled
