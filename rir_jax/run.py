"""What launch.py does once flags are parsed: checks first, then the run, then exit codes.

Every user mistake is found before the workdir is created and reported in one line with
exit code 2; failures during the run exit 1.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import traceback
from typing import NoReturn

import jax
import ml_collections

from rir_jax import (checkpoint, config_check, data, loop, memory_check, metrics, model_card,
                     parallel, renamed, stopping, storage, warm_start,
                     workdir as workdir_lib, workdir_lock)
from rir_jax.data import pipeline, validation
from rir_jax.kernels import record as kernel_record

log = logging.getLogger(__name__)
USAGE_ERRORS = (config_check.ConfigError, data.DataError, workdir_lib.WorkdirError)


class UsageError(ValueError):
  """Bad flags or environment: exit 2."""


@dataclasses.dataclass(frozen=True)
class Distributed:
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False
  timeout_s: int | None = None


def one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return text or type(error).__name__


def usage_error(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _check_distributed(d: Distributed) -> None:
  if not d.coordinator_address:
    return
  if d.num_processes is None or d.process_id is None:
    raise UsageError("--coordinator_address needs --num_processes and --process_id")
  if not 0 <= d.process_id < d.num_processes:
    raise UsageError(f"--process_id={d.process_id} must be in [0, {d.num_processes})")
  host, _, port = d.coordinator_address.rpartition(":")
  if not port.isdigit():
    raise UsageError(f"--coordinator_address={d.coordinator_address!r} must be host:port")
  if d.process_id == 0:  # the coordinator binds this port: fail now, not in a crash later
    with socket.socket() as probe:
      # As the coordinator does: a port whose last run died (TIME_WAIT) is free to re-use.
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        probe.bind((host, int(port)))
      except OSError as error:
        raise UsageError(f"coordinator port {port} on {host} is not free ({error.strerror}); "
                         "pick another --coordinator_address port") from error


def _check_model(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """Builds the model abstractly: bad model keys, or batches too big for memory, fail here."""
  try:
    model = loop.make_model(config, dataset.num_classes)
    shape = (1, *dataset.train_images.shape[1:])
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jax.numpy.zeros(shape), train=False))
  except (TypeError, ValueError) as error:
    raise UsageError(f"--config.model: {one_line(error)}") from error
  if config.init_from:
    warm_start.check(config, model, shape[1:], dataset.num_classes)
  memory_check.check_batches(config, model, dataset.train_images.shape[1:],
                             len(dataset.test_labels))


def _start_backend() -> None:
  """JAX's devices, or one line saying why there are none (JAX_PLATFORMS=cuda, no GPU)."""
  try:
    jax.devices()
  except Exception as error:  # noqa: BLE001 - RuntimeError, or an assert for an unknown platform
    platforms = os.environ.get("JAX_PLATFORMS", "")
    raise UsageError(f"JAX cannot start its devices (JAX_PLATFORMS={platforms!r}: "
                     f"{one_line(error)[:300]}); check the accelerator and its drivers, or "
                     "set JAX_PLATFORMS=cpu") from error


def _log_devices() -> None:
  """What the run will train on: the first line to read when a GPU or TPU went unused."""
  log.info("jax %s, backend %s: %d device(s) of kind %r, %d local, %d process(es)",
           jax.__version__, jax.default_backend(), jax.device_count(),
           jax.devices()[0].device_kind, jax.local_device_count(), jax.process_count())


def _prepare(config, workdir: storage.Path, distributed: Distributed,
             jax_cache_dir: str) -> data.Dataset:
  """All checks that need no workdir; returns the dataset the run will use."""
  _check_distributed(distributed)
  parallel.initialize_distributed(distributed.coordinator_address, distributed.num_processes,
                                  distributed.process_id, auto=distributed.auto,
                                  timeout_s=distributed.timeout_s)
  _start_backend()
  if jax_cache_dir:
    jax.config.update("jax_compilation_cache_dir", jax_cache_dir)
  try:
    config_check.validate(config, device_count=jax.device_count(),
                          process_count=jax.process_count())
  except (AttributeError, KeyError) as error:  # a config not derived from default.py
    raise UsageError(f"--config lacks a key every config has ({one_line(error)}); start it "
                     "from configs/default.py's get_config()") from error
  workdir_lib.check(workdir, config)
  dataset = validation.load_for_config(config.data)
  if dataset.train_images.shape[0] < config.batch_size:
    raise config_check.ConfigError(
        f"--config.batch_size={config.batch_size} is larger than the "
        f"{dataset.train_images.shape[0]} training examples of {config.data.name}")
  config_check.validate_schedule(
      config, pipeline.steps_per_epoch(len(dataset.train_labels), config.batch_size))
  _check_model(config, dataset)
  return dataset


def _error(message: str) -> int:
  print(f"error: {message}", file=sys.stderr)
  return 1


def _unexpected(error: BaseException, workdir: storage.Path) -> int:
  """One line for a failure nobody foresaw; its traceback goes to a file in the workdir."""
  where = workdir / "traceback.txt"
  try:
    where.write_text("".join(traceback.format_exception(error)))
    hint = f" (traceback in {where})"
  except OSError:
    hint = ""
  return _error(f"{type(error).__name__}: {one_line(error)[:500]}{hint}")


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
      workdir_lib.claim(workdir, config, main=parallel.is_main_process())
      settled = kernel_record.settle(config, workdir, write=parallel.is_main_process())
    except (UsageError, workdir_lock.WorkdirBusy, *USAGE_ERRORS) as error:
      usage_error(one_line(error))
    except OSError as error:  # a full disk as the workdir is created
      return _error(f"cannot set up --workdir={workdir} ({error.strerror or error})")
    return _train(config, settled, workdir, dataset, signals)
  except (stopping.Stopped, KeyboardInterrupt) as error:
    return _stopped(error)


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
    usage_error(one_line(error))
  except loop.NonFiniteLoss as error:
    kept = (f"the newest checkpoint kept is step {error.kept_step}"
            if error.kept_step is not None else "no checkpoint was saved before it")
    return _error(f"{error}; stopped, {kept} (in {workdir / 'checkpoints'}; try a lower "
                  "--config.optimizer.learning_rate, or --config.nan_policy=skip_step)")
  except (checkpoint.CheckpointError, metrics.WriterError, OSError) as error:
    return _error(f"{one_line(error)}; {_what_is_kept(workdir)}")
  except (stopping.Stopped, KeyboardInterrupt):
    raise
  except Exception as error:  # noqa: BLE001 - one line, the traceback to a file
    return _unexpected(error, workdir)
  if parallel.is_main_process():
    print(f"final eval accuracy {final['eval/accuracy']:.4f} (loss {final['eval/loss']:.4f}, "
          f"{final['eval/examples']} test examples); results in {workdir}: config.json, "
          "metrics.jsonl, tensorboard/, checkpoints/")
  return 0


def _what_is_kept(workdir: storage.Path) -> str:
  """Truthfully: the newest checkpoint on disk, or that there is none."""
  newest = checkpoint.newest_step(workdir / "checkpoints")
  if newest is None:
    return "no checkpoint has been saved"
  return f"the checkpoint at step {newest} is intact"


def _stopped(error: BaseException) -> int:
  """SIGTERM or SIGINT: one line saying where the run stopped and how to go on."""
  if isinstance(error, KeyboardInterrupt):
    error = stopping.Stopped(signal.SIGINT)
  where = (f" at step {error.step}, its checkpoint saved" if error.step is not None else "")
  print(f"stopped by {signal.Signals(error.signum).name}{where}; re-run the same command to "
        "continue", file=sys.stderr)
  return error.exit_code
