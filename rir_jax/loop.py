"""train_and_evaluate(config, workdir): the one place with side effects.

Schedule of steps, evals, checkpoints and metrics around the pure, jit-compiled steps
of rir_jax.train. Safe to re-run on the same workdir: it resumes from the newest good
checkpoint and continues exactly as an uninterrupted run would.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time

import jax
import ml_collections
import numpy as np

from rir_jax import (best as best_lib, checkpoint, dispatch, errors, metrics as metrics_lib,
                     parallel, stopping, storage, target, trainer as trainer_lib, warm_start)
from rir_jax.data import Dataset, batching, feeding

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
  """The training loss became NaN or inf (nan_policy=stop).

  `kept_step` is the newest checkpoint left on disk (None: none), set once saves landed.
  """
  kept_step: int | None = None


class PastTheEnd(errors.ConfigError):
  """The workdir's checkpoint is beyond this config's last step: nothing to train."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """The run's schedule, in steps."""
  steps_per_epoch: int
  total_steps: int
  eval_every: int
  checkpoint_every: int
  log_every: int
  steps_per_dispatch: int = 1

  def chunks(self, start: int) -> list[tuple[int, int]]:
    """The dispatches from `start` to the end (rir_jax.dispatch)."""
    return list(dispatch.chunks(start, self.total_steps, self.steps_per_dispatch,
                                (self.log_every, self.eval_every, self.checkpoint_every)))


def make_plan(config: ml_collections.ConfigDict, num_train_examples: int) -> Plan:
  spe = batching.steps_per_epoch(num_train_examples, config.batch_size)
  total = (config.num_train_steps if config.num_train_steps > 0
           else max(1, int(math.ceil(config.num_epochs * spe))))
  eval_every = (config.eval_every_steps if config.eval_every_steps > 0
                else max(1, int(round(config.eval_every_epochs * spe))))
  return Plan(spe, total, eval_every, config.checkpoint_every_steps, config.log_every_steps,
              config.steps_per_dispatch)


class _TrainLog:
  """Accumulates per-step device metrics; one host sync per flush."""

  def __init__(self, global_batch: int):
    self._global_batch = global_batch
    self._pending: list[tuple[int, int, dict]] = []
    self._clock = time.perf_counter()

  def add(self, first_step: int, steps: int, step_metrics: dict) -> None:
    """The metrics of steps [first_step, first_step + steps): scalars, or stacked if several."""
    self._pending.append((first_step, steps, step_metrics))

  def exclude_since(self, start: float) -> None:
    """Takes time spent since `start` (evaluating, checkpointing) out of images/s."""
    self._clock += time.perf_counter() - start

  def flush(self, nan_policy: str) -> dict[str, float] | None:
    """Mean train metrics since the last flush; raises NonFiniteLoss on the first bad step."""
    if not self._pending:
      return None
    steps, host = [], []
    for (first, count, _), fetched in zip(
        self._pending, jax.device_get([m for _, _, m in self._pending])):
      rows = {name: np.reshape(value, (count,)) for name, value in fetched.items()}
      steps += range(first, first + count)
      host += [{name: rows[name][i] for name in rows} for i in range(count)]
    now = time.perf_counter()
    elapsed, self._clock = now - self._clock, now
    self._pending = []
    bad = [s for s, m in zip(steps, host) if not m["finite"]]
    if bad and nan_policy == "stop":
      raise NonFiniteLoss(f"training loss is not finite at step {bad[0] + 1}")
    good = [m for m in host if m["finite"]] or host
    return {
        "train/loss": float(np.mean([m["loss"] for m in good])),
        "train/accuracy": float(np.mean([m["accuracy"] for m in good])),
        "train/learning_rate": float(host[-1]["learning_rate"]),
        "train/images_per_sec": self._global_batch * len(host) / elapsed,
        "train/nonfinite_steps": len(bad),
    }


def _drop_lines_after(path: storage.Path, step: int) -> None:
  """On resume, forget metrics written past the restored step (they will be re-made).

  Unreadable lines (a torn last line, garbage) are dropped with a warning, kept aside in
  metrics.jsonl.dropped. Every checkpoint is saved after a line of its own step (a log,
  an eval, or the flush before the save), so a file without that line has lost lines.
  """
  if not path.exists():
    if step:
      log.warning("%s is missing while the run resumes at step %d (a partial copy?): the "
                  "lines of steps up to %d are lost; it starts again from here", path, step,
                  step)
    return
  lines, problems = metrics_lib.read_metrics_leniently(path)
  if step and not any(line["step"] == step for line in lines):
    ends = max((line["step"] for line in lines if line["step"] < step), default=None)
    log.warning("%s has no line of step %d, where the run resumes (a partial or older "
                "copy?): %s; the run goes on from there", path, step,
                "it holds no line before it" if ends is None else
                f"its lines after step {ends} up to step {step} are lost")
  try:
    if problems:
      dropped = path.with_name(path.name + ".dropped")
      storage.write_atomic(dropped, path.read_bytes())
      log.warning("%s: dropped %d unreadable line(s): %s (the file as it was: %s)", path,
                  len(problems), "; ".join(problems[:3]), dropped)
    kept = [line for line in lines if line["step"] <= step]
    # All or nothing, so a kill here never loses the file.
    storage.write_atomic(path, "".join(json.dumps(line) + "\n" for line in kept))
  except OSError as error:
    raise metrics_lib.WriterError(f"could not rewrite {path} ({error.strerror})") from error


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: storage.Path,
                       dataset: Dataset, *, signals=stopping.NO_SIGNALS,
                       on_restored=None) -> dict[str, float]:
  """Trains `config` on `dataset` into `workdir` (resuming if it holds checkpoints).

  `on_restored()` runs once the workdir's checkpoint (if any) has restored into this
  config, before anything else is written; `signals` (stopping.StopSignals) stops the
  loop at a step boundary with a checkpoint of that step, raising stopping.Stopped.
  """
  plan = make_plan(config, len(dataset.train_labels))
  trainer = trainer_lib.Trainer(config, dataset, plan)
  ckpts = checkpoint.Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints)
  try:
    restored = ckpts.restore_newest(trainer.state)
  except BaseException:
    _close_quietly(ckpts)
    raise
  if restored is not None:
    trainer.state = restored
  elif config.init_from:
    trainer.state = warm_start.apply(trainer.state, config, dataset.num_classes,
                                     parallel.replicated(trainer.mesh))
  start = int(jax.device_get(trainer.state.step))
  if start > plan.total_steps:
    _close_quietly(ckpts)
    raise PastTheEnd(f"{workdir} holds a checkpoint at step {start}, past this config's "
                     f"last step {plan.total_steps}; use a new --workdir for a shorter run")
  if on_restored is not None:
    on_restored()
  main = parallel.is_main_process()
  if main:
    _drop_lines_after(workdir / "metrics.jsonl", start)
  writer = metrics_lib.MetricsWriter(workdir, enabled=main)
  best = (best_lib.BestCheckpoint(workdir / "checkpoints", resumed_step=start)
          if dataset.validation_images is not None else None)
  log.info("%s at step %d of %d (%d steps per epoch)",
           "resuming" if start else "starting", start, plan.total_steps, plan.steps_per_epoch)
  try:
    with signals.deferred():
      final = _run(config, plan, trainer, ckpts, best, writer, dataset, start, signals)
  except stopping.Stopped:
    ckpts.close()  # the stop's checkpoint must land: a failure here is the one to report
    if best is not None:
      best.close()
    writer.close()
    raise
  except NonFiniteLoss as error:
    _close_quietly(*filter(None, (ckpts, best, writer)))
    error.kept_step = checkpoint.newest_step(workdir / "checkpoints")
    raise
  except BaseException:
    _close_quietly(*filter(None, (ckpts, best, writer)))
    raise
  ckpts.close()
  if best is not None:
    best.close()
  writer.close()
  return final


def _close_quietly(*resources) -> None:
  """Closes after a failure, logging what else fails: the first error is the one to report.

  On a full disk, closing the writers fails too, and would otherwise hide the real cause.
  """
  for resource in resources:
    try:
      resource.close()
    except Exception as error:  # noqa: BLE001
      log.warning("while stopping: %s: %s", type(error).__name__, str(error)[:300])


def _run(config, plan: Plan, trainer: trainer_lib.Trainer, ckpts: checkpoint.Checkpoints,
         best: best_lib.BestCheckpoint | None, writer: metrics_lib.MetricsWriter,
         dataset: Dataset, start: int, signals) -> dict[str, float]:
  eval_split = functools.partial(feeding.eval_batches, global_batch=config.eval_batch_size,
                                 mesh=trainer.mesh)
  test_data = eval_split(dataset.test_images, dataset.test_labels)
  val_data = (eval_split(dataset.validation_images, dataset.validation_labels)
              if best is not None else None)
  progress = metrics_lib.Progress(total_steps=plan.total_steps, initial_step=start,
                                  steps_per_epoch=plan.steps_per_epoch,
                                  enabled=parallel.is_main_process())
  train_log = _TrainLog(config.batch_size)
  final = {}
  first = True
  eval_data = test_data if val_data is None else val_data
  ended = target.ended_at(config.stop_at_accuracy, start, plan.eval_every,
                          lambda: trainer.evaluate(eval_data))
  chunks = [] if ended else plan.chunks(start)
  if plan.steps_per_dispatch > 1:
    several = sum(n > 1 for _, n in chunks)
    log.info("%d steps per dispatch: %d dispatches of several steps, %d single steps (before "
             "logs, evals and checkpoints)", plan.steps_per_dispatch, several,
             len(chunks) - several)
  batches = feeding.train_batches(
      dataset.train_images, dataset.train_labels, global_batch=config.batch_size,
      seed=config.seed, mesh=trainer.mesh, chunks=chunks)
  # Boundaries are counted one by one: the multi-process stop agrees on the next count.
  for boundary, (step, steps, batch) in enumerate(batches, start=1):
    if first:
      example = batch if steps == 1 else jax.tree.map(lambda x: jax.ShapeDtypeStruct(
          x.shape[1:], x.dtype, sharding=parallel.batch_sharded(trainer.mesh)), batch)
      trainer.compile(example, sorted({n for _, n in chunks}))
      writer.write(step, {"train/compile_seconds": trainer.compile_seconds})
      train_log = _TrainLog(config.batch_size)  # start the clock after compiling
      first = False
    train_log.add(step, steps, trainer.step(batch) if steps == 1 else trainer.steps(batch))
    done = step + steps
    is_last = done == plan.total_steps
    if done % plan.log_every == 0 or is_last:
      scalars = train_log.flush(config.nan_policy)
      scalars["train/epoch"] = done / plan.steps_per_epoch
      writer.write(done, scalars)
      progress.update(done, scalars["train/loss"], scalars["train/images_per_sec"])
    if done % plan.eval_every == 0 or is_last:
      paused = time.perf_counter()
      scalars, final = _evaluate(trainer, test_data, val_data, best, done, is_last,
                                 config.stop_at_accuracy)
      is_last = is_last or target.reached(config.stop_at_accuracy, scalars)  # stop_at_accuracy
      writer.write(done, {**scalars, "train/epoch": done / plan.steps_per_epoch})
      train_log.exclude_since(paused)
    saving = done % plan.checkpoint_every == 0 or is_last
    if saving:
      _flush_into(writer, train_log, config.nan_policy, done)
      paused = time.perf_counter()
      if best is not None:  # no checkpoint may land before the best it follows
        best.finish()
      ckpts.save(done, trainer.state)
      train_log.exclude_since(paused)
    signum = None if is_last else signals.requested(boundary)
    if signum is not None:
      progress.close()
      if not saving:  # the stop's own checkpoint, after the same check as any other
        _flush_into(writer, train_log, config.nan_policy, done)
        ckpts.save(done, trainer.state)
      raise stopping.Stopped(signum, done)
    if is_last:  # stop_at_accuracy reached before the last step
      break
  progress.close()
  if not final:  # resumed at the very end (or target): the last eval is re-made for the caller
    final = trainer.evaluate(test_data)
  return final


def _evaluate(trainer: trainer_lib.Trainer, test_data, val_data, best: best_lib.BestCheckpoint | None,
              step: int, is_last: bool, stop_at: float) -> tuple[dict, dict]:
  """(the eval line's scalars, the test split's results or {}).

  With a validation split, evals run on it and choose the best checkpoint; the test
  split is evaluated once, at the end. Without one, they run on the test split and the
  best is simply the last.
  """
  if best is None:
    final = trainer.evaluate(test_data)
    return {**final, "best/step": step, "best/accuracy": final["eval/accuracy"]}, final
  scalars = trainer.evaluate(val_data, prefix="val")
  best.offer(step, scalars["val/accuracy"], trainer.state)
  scalars.update({"best/step": best.step, "best/accuracy": best.accuracy})
  final = trainer.evaluate(test_data) if is_last or target.reached(stop_at, scalars) else {}
  return {**scalars, **final}, final


def _flush_into(writer, train_log: _TrainLog, nan_policy: str, step: int) -> None:
  """Checks every step since the last log before a checkpoint may record its state."""
  scalars = train_log.flush(nan_policy)
  if scalars is not None:
    writer.write(step, scalars)
