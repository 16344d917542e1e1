"""Orbax checkpoints of the train state: async saves, newest-good restore.

Every process must call every method here: Orbax coordinates saves across hosts.
"""
from __future__ import annotations

import logging

import jax
import orbax.checkpoint as ocp

from rir_jax import library_noise, storage
from rir_jax.errors import one_line, reason

log = logging.getLogger(__name__)

# What a failed write raises: OSError from Orbax's own files, ValueError from TensorStore's
# (a full disk reads "RESOURCE_EXHAUSTED: ... No space left on device").
WRITE_ERRORS = (OSError, ValueError)


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or none could be read; older ones are untouched."""


def newest_step(directory: storage.Path) -> int | None:
  """The newest finished checkpoint's step in `directory` (None: none), from its listing."""
  steps = [int(p.name) for p in directory.glob("*") if p.name.isdigit() and p.is_dir()]
  return max(steps, default=None)


def save_whole_arrays_on_cpu() -> None:
  """On the CPU backend, each replicated array is written from one device's copy.

  Orbax's default there splits it among its replicas, and slicing each (parameter shape,
  device) compiles a program, all at the first save: ResNet-20's on 8 CPU devices took
  6.9 s, 0.7 s whole (benchmarks/results/startup). The copies share one memory, so
  splitting saves nothing. (Orbax already writes whole arrays on GPUs.)
  """
  if jax.default_backend() != "cpu":
    return
  absl_log = logging.getLogger("absl")
  level = absl_log.level
  absl_log.setLevel(logging.ERROR)  # not Orbax's warning that it overrides, as asked to
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  finally:
    absl_log.setLevel(level)


class Checkpoints:
  """The run's checkpoint folder: save every so often, resume from the newest good one."""

  def __init__(self, directory: storage.Path, *, keep: int):
    self._directory = storage.absolute(directory)
    save_whole_arrays_on_cpu()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=True,
        # A save killed half-way leaves a temporary folder; Orbax ignores and removes it.
        cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self._directory, options=options)
    self._in_flight: int | None = None

  def _restore(self, step: int, abstract):
    """One step through a manager of its own: a failed restore leaves a manager unable to
    restore any other step, so one damaged folder must not condemn the good ones."""
    reader = ocp.CheckpointManager(self._directory, options=ocp.CheckpointManagerOptions(
        create=False))
    library_noise.quiet_abandoned_reads()
    try:
      return reader.restore(step, args=ocp.args.StandardRestore(abstract))
    finally:
      reader.close()

  def _readable(self, step: int) -> bool:
    """Whether the step's own description reads back: not so after an interrupted copy."""
    reader = ocp.CheckpointManager(self._directory, options=ocp.CheckpointManagerOptions(
        create=False), item_handlers=ocp.StandardCheckpointHandler())
    try:
      return reader.item_metadata(step) is not None
    except Exception:  # noqa: BLE001 - whatever the failure, it does not read
      return False
    finally:
      reader.close()

  def restore_newest(self, target):
    """The newest checkpoint that restores, shaped and sharded like `target`, or None.

    A damaged checkpoint (a file truncated or lost, an empty or partial folder) newer
    than the newest good one is reported and moved aside to `damaged-STEP`, never
    deleted: left in place, it would stop Orbax from saving that step again (Orbax only
    saves steps after its latest). When every checkpoint describes itself but none
    restores, the config rather than the disk is the likely cause (another model, say):
    that raises CheckpointError and moves nothing. Folders that cannot even describe
    themselves are damaged whatever the config: set aside, and the run starts over.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    self._manager.reload()
    damaged = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state = self._restore(step, abstract)
      except Exception as error:  # noqa: BLE001 - any failure means "not usable"
        log.warning("checkpoint at step %d does not restore (%s); trying an older one",
                    step, reason(error)[:300])
        damaged.append((step, error))
        continue
      self._set_aside([s for s, _ in damaged])
      return state
    described = [(step, error) for step, error in damaged if self._readable(step)]
    if described:
      step, error = described[0]
      raise CheckpointError(
          f"no checkpoint in {self._directory} restores into this config (step {step}: "
          f"{reason(error)[:300]}); if the model changed, use a new --workdir; if the "
          "checkpoints are damaged, move them out of the way to start over")
    self._set_aside([s for s, _ in damaged])
    if damaged:
      log.warning("no checkpoint left in %s: starting over", self._directory)
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged steps to `damaged-STEP` (process 0), then lets every process see it."""
    if not steps:
      return
    if jax.process_index() == 0:
      for step in steps:
        target = self._directory / f"damaged-{step}"
        suffix = 1
        while target.exists():  # damaged before at the same step: keep both
          target, suffix = self._directory / f"damaged-{step}.{suffix}", suffix + 1
        (self._directory / str(step)).rename(target)
        log.warning("moved the damaged checkpoint at step %d aside to %s", step, target)
    ocp.multihost.sync_global_processes(f"rir_jax_set_aside_{'_'.join(map(str, steps))}")
    self._manager.reload()

  def save(self, step: int, state) -> None:
    """Starts an async save of `state` at `step`, after the one in flight has landed."""
    self._finish()
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state))
    except WRITE_ERRORS as error:
      raise CheckpointError(f"could not save checkpoint at step {step}: "
                            f"{one_line(error)}") from error
    self._in_flight = step

  def _finish(self) -> None:
    """Waits for the save in flight: a failure in Orbax's background threads surfaces here."""
    try:
      self._manager.wait_until_finished()
    except WRITE_ERRORS as error:
      raise CheckpointError(f"could not save checkpoint at step {self._in_flight}: "
                            f"{one_line(error)}") from error
    finally:
      self._in_flight = None

  def close(self) -> None:
    """Waits for the async save in flight, then releases the manager."""
    try:
      self._finish()
    finally:
      self._manager.close()
