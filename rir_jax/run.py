"""What launch.py does once flags are parsed: checks first, then the run, then exit codes.

Every user mistake is found before the workdir is created and reported in one line with
exit code 2; failures during the run exit 1.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
import sys
from typing import NoReturn

import jax
import ml_collections

from rir_jax import (checkpoint, config_check, data, loop, model_card, parallel, storage,
                     warm_start, workdir as workdir_lib)
from rir_jax.data import validation

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
  """Builds the model abstractly: bad model keys fail here, before any workdir exists."""
  try:
    model = loop.make_model(config, dataset.num_classes)
    shape = (1, *dataset.train_images.shape[1:])
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jax.numpy.zeros(shape), train=False))
  except (TypeError, ValueError) as error:
    raise UsageError(f"--config.model: {one_line(error)}") from error
  if config.init_from:
    warm_start.check(config, model, shape[1:], dataset.num_classes)


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
  if jax_cache_dir:
    jax.config.update("jax_compilation_cache_dir", jax_cache_dir)
  config_check.validate(config, device_count=jax.device_count(),
                        process_count=jax.process_count())
  workdir_lib.check(workdir, config)
  dataset = validation.load_for_config(config.data)
  if dataset.train_images.shape[0] < config.batch_size:
    raise config_check.ConfigError(
        f"--config.batch_size={config.batch_size} is larger than the "
        f"{dataset.train_images.shape[0]} training examples of {config.data.name}")
  _check_model(config, dataset)
  return dataset


def launch(config: ml_collections.ConfigDict, workdir: storage.Path, *,
           distributed: Distributed, jax_cache_dir: str) -> int:
  """Runs the whole command; returns the exit code (usage errors exit 2 directly)."""
  try:
    dataset = _prepare(config, workdir, distributed, jax_cache_dir)
  except (UsageError, *USAGE_ERRORS) as error:
    usage_error(one_line(error))
  _log_devices()  # after the checks: a usage error stays one line on stderr
  workdir_lib.claim(workdir, config, write=parallel.is_main_process())
  if parallel.is_main_process():  # what a loaded model needs, fixed before it trains
    model_card.write(workdir, model_card.describe(config, dataset))
  try:
    final = loop.train_and_evaluate(config, workdir, dataset)
  except loop.NonFiniteLoss as error:
    print(f"error: {error}; stopped with the last good checkpoint kept in "
          f"{workdir / 'checkpoints'} (try a lower --config.optimizer.learning_rate, or "
          "--config.nan_policy=skip_step)", file=sys.stderr)
    return 1
  except checkpoint.CheckpointError as error:
    print(f"error: {one_line(error)}; earlier checkpoints are intact", file=sys.stderr)
    return 1
  if parallel.is_main_process():
    print(f"final eval accuracy {final['eval/accuracy']:.4f} (loss {final['eval/loss']:.4f}, "
          f"{final['eval/examples']} test examples); results in {workdir}: config.json, "
          "metrics.jsonl, tensorboard/, checkpoints/")
  return 0
