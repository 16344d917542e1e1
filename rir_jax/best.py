"""The best checkpoint: the state at the validation eval with the highest accuracy so far.

It lives in `checkpoints/best/`, an Orbax manager of its own that keeps one step, beside
the newest checkpoints the run resumes from. Each save records its accuracy in Orbax's
step metrics, so a resumed run knows the best so far from the checkpoint itself (on every
host) rather than from metrics.jsonl. Without a validation split nothing is saved here:
the best is the last checkpoint (selecting on the test split would make its accuracy a
biased estimate).
"""
from __future__ import annotations

import logging
import math
import pathlib

import orbax.checkpoint as ocp

from rir_jax import checkpoint, storage

log = logging.getLogger(__name__)

BEST_DIR = "best"
_METRIC = "accuracy"


def manager(checkpoints: pathlib.Path, *, create: bool) -> ocp.CheckpointManager:
  """The Orbax manager of `checkpoints/best/`; create=False: for loading, touches nothing."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda metrics: metrics[_METRIC], best_mode="max",
      create=create, enable_async_checkpointing=create, cleanup_tmp_directories=create)
  return ocp.CheckpointManager(storage.absolute(checkpoints / BEST_DIR), options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


class BestCheckpoint:
  """Saves the state whenever a validation accuracy beats every earlier one (ties: the earlier)."""

  def __init__(self, checkpoints: pathlib.Path, *, resumed_step: int):
    self._manager = manager(checkpoints, create=True)
    # A best saved after the checkpoint the run resumes from belongs to steps about to be
    # re-run: forget it and let their evals choose again (the same, unless
    # allow_config_change let the run change; Orbax saves no step before its latest).
    for step in self._manager.all_steps():
      if step > resumed_step:
        log.info("forgetting the best checkpoint at step %d (after the resumed step)", step)
        self._manager.delete(step)
    self.step = self._manager.best_step()
    self.accuracy = (float(self._manager.metrics(self.step)[_METRIC])
                     if self.step is not None else -math.inf)

  def offer(self, step: int, accuracy: float, state) -> bool:
    """Saves `state` (asynchronously) if `accuracy` is the best yet; True if it was."""
    if not accuracy > self.accuracy:
      return False
    self.finish()
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), metrics={_METRIC: accuracy})
    except checkpoint.WRITE_ERRORS as error:
      brief = " ".join(str(error).split())[:300]
      raise checkpoint.CheckpointError(
          f"could not save the best checkpoint at step {step}: {brief}") from error
    self.step, self.accuracy = step, accuracy
    return True

  def finish(self) -> None:
    """Waits until the save in flight has landed."""
    try:
      self._manager.wait_until_finished()
    except checkpoint.WRITE_ERRORS as error:
      brief = " ".join(str(error).split())[:300]
      raise checkpoint.CheckpointError(
          f"could not save the best checkpoint at step {self.step}: {brief}") from error

  def close(self) -> None:
    try:
      self.finish()
    finally:
      self._manager.close()
