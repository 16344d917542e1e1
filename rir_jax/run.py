"""What launch.py does once flags are parsed: checks first, then the run, then exit codes.

Every user mistake is found before the workdir is created and reported in one line with
exit code 2; failures during the run exit 1.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import traceback

import jax
import ml_collections

from rir_jax import (checkpoint, checks, compile_cache, data, errors, loop, memory_check, metrics,
                     model_card, parallel, process_agreement, renamed, stopping, storage,
                     workdir as workdir_lib, workdir_lock)
from rir_jax.data import validation
from rir_jax.kernels import record as kernel_record

log = logging.getLogger(__name__)
USAGE_ERRORS = (errors.UsageError, data.DataError, workdir_lib.WorkdirError)


@dataclasses.dataclass(frozen=True)
class Distributed:
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False
  timeout_s: int | None = None


def _log_devices() -> None:
  """What the run will train on: the first line to read when a GPU or TPU went unused."""
  log.info("jax %s, backend %s: %d device(s) of kind %r, %d local, %d process(es)",
           jax.__version__, jax.default_backend(), jax.device_count(),
           jax.devices()[0].device_kind, jax.local_device_count(), jax.process_count())


def _prepare(config, workdir: storage.Path, distributed: Distributed,
             jax_cache_dir: str) -> data.Dataset:
  """All checks that need no workdir; returns the dataset the run will use."""
  checks.distributed(distributed.coordinator_address, distributed.num_processes,
                     distributed.process_id)
  parallel.initialize_distributed(distributed.coordinator_address, distributed.num_processes,
                                  distributed.process_id, auto=distributed.auto,
                                  timeout_s=distributed.timeout_s)
  checks.backend()
  if jax_cache_dir:
    jax.config.update("jax_compilation_cache_dir", jax_cache_dir)
  compile_cache.stable_keys()
  checks.config_keys(config)
  workdir_lib.check(workdir, config)
  dataset = validation.load_for_config(config.data)
  checks.dataset_fits(config, dataset)
  checks.model(config, dataset)
  return dataset


def _error(message: str) -> int:
  print(f"error: {message}", file=sys.stderr)
  return errors.ExitCode.FAILURE


def _unexpected(error: BaseException, workdir: storage.Path) -> int:
  """One line for a failure nobody foresaw; its traceback goes to a file in the workdir."""
  where = workdir / "traceback.txt"
  try:
    where.write_text("".join(traceback.format_exception(error)))
    hint = f" (traceback in {where})"
  except OSError:
    hint = ""
  return _error(f"{type(error).__name__}: {errors.one_line(error)[:500]}{hint}")


def launch(config: ml_collections.ConfigDict, workdir: storage.Path, *,
           distributed: Distributed, jax_cache_dir: str) -> int:
  """Runs the whole command; returns the exit code (usage errors exit 2 directly)."""
  config = renamed.config(config)  # old key names, as old commands and config files hold
  signals = stopping.StopSignals()
  try:
    try:
      dataset = _prepare(config, workdir, distributed, jax_cache_dir)
      _log_devices()  # after the checks: a usage error stays one line on stderr
      signals.install()
      process_agreement.check(workdir, config, parallel.PEER_WAIT_S)
      workdir_lib.claim(workdir, config, main=parallel.is_main_process())
      settled = kernel_record.settle(config, workdir, write=parallel.is_main_process())
    except (workdir_lock.WorkdirBusy, *USAGE_ERRORS) as error:
      errors.fail(error)
    except OSError as error:  # a full disk as the workdir is created
      return _error(f"cannot set up --workdir={workdir} ({error.strerror or error})")
    return _train(config, settled, workdir, dataset, signals)
  except (stopping.Stopped, KeyboardInterrupt) as error:
    return stopping.report(error)


def _record_config(config, workdir: storage.Path, dataset: data.Dataset):
  """The workdir's config.json and model.json (what a loaded model needs), written once
  the checkpoint has restored into `config`."""
  if not parallel.is_main_process():
    return None

  def record():
    workdir_lib.record_config(workdir, config)
    model_card.write(workdir, model_card.describe(config, dataset))
  return record


def _train(config, settled, workdir: storage.Path, dataset: data.Dataset,
           signals: stopping.StopSignals) -> int:
  """Trains `settled` (`config` with its kernels resolved); config.json records `config`."""
  try:
    final = loop.train_and_evaluate(settled, workdir, dataset, signals=signals,
                                    on_restored=_record_config(config, workdir, dataset))
  except loop.PastTheEnd as error:
    errors.fail(error)
  except loop.NonFiniteLoss as error:
    kept = (f"the newest checkpoint kept is step {error.kept_step}"
            if error.kept_step is not None else "no checkpoint was saved before it")
    return _error(f"{error}; stopped, {kept} (in {workdir / 'checkpoints'}; try a lower "
                  "--config.optimizer.learning_rate, or --config.nan_policy=skip_step)")
  except (checkpoint.CheckpointError, metrics.WriterError, OSError) as error:
    return _error(f"{errors.one_line(error)}; {_what_is_kept(workdir)}")
  except (stopping.Stopped, KeyboardInterrupt):
    raise
  except Exception as error:  # noqa: BLE001 - one line, the traceback to a file
    memory = memory_check.out_of_memory(
        error, f"use a smaller --config.batch_size (now {config.batch_size}) or "
        f"--config.eval_batch_size (now {config.eval_batch_size})")
    if memory:
      return _error(f"{memory}; {_what_is_kept(workdir)}")
    return _unexpected(error, workdir)
  if parallel.is_main_process():
    print(f"final eval accuracy {final['eval/accuracy']:.4f} (loss {final['eval/loss']:.4f}, "
          f"{final['eval/examples']} test examples); results in {workdir}: config.json, "
          "metrics.jsonl, tensorboard/, checkpoints/")
  return errors.ExitCode.OK


def _what_is_kept(workdir: storage.Path) -> str:
  """Truthfully: the newest checkpoint on disk, or that there is none."""
  newest = checkpoint.newest_step(workdir / "checkpoints")
  if newest is None:
    return "no checkpoint has been saved"
  return f"the checkpoint at step {newest} is intact"
