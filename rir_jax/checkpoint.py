"""Orbax checkpoints of the train state: async saves, newest-good restore.

Every process must call every method here: Orbax coordinates saves across hosts.
"""
from __future__ import annotations

import logging
import pathlib

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """A checkpoint could not be written; older checkpoints are untouched."""


class Checkpoints:
  """The run's checkpoint folder: save every so often, resume from the newest good one."""

  def __init__(self, directory: pathlib.Path, *, keep: int):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=True,
        # A save killed half-way leaves a temporary folder; Orbax ignores and removes it.
        cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(directory.resolve(), options=options)

  def restore_newest(self, target):
    """The newest checkpoint that restores, shaped and sharded like `target`, or None.

    A damaged newest checkpoint (a file truncated or lost) is reported and skipped, so a
    run never crash-loops on it; nothing is deleted.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    self._manager.reload()
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as error:  # noqa: BLE001 - any failure means "not usable"
        log.warning("checkpoint at step %d is damaged (%s: %s); trying an older one",
                    step, type(error).__name__, str(error).splitlines()[0][:200])
    return None

  def save(self, step: int, state) -> None:
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state))
    except OSError as error:
      raise CheckpointError(f"could not save checkpoint at step {step}: {error}") from error

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def close(self) -> None:
    """Waits for the async save in flight, then releases the manager."""
    try:
      self._manager.wait_until_finished()
    except OSError as error:
      raise CheckpointError(f"could not finish writing a checkpoint: {error}") from error
    finally:
      self._manager.close()
