"""Every check before a run: flags, environment, config values, data, model and memory.

A mistake costs one line and exit code 2 (rir_jax.errors), before the workdir is touched,
not a crashed run. rir_jax.run calls these in order; the workdir's own state is checked
by rir_jax.workdir.check.
"""
from __future__ import annotations

import math
import os
import socket

import jax
import ml_collections

from rir_jax import data, memory_check, optim, storage, trainer, warm_start
from rir_jax.data import DATASET_NAMES, batching
from rir_jax.errors import ConfigError, UsageError, one_line
from rir_jax.kernels import select
from rir_jax.models import MODEL_NAMES


def _choice(key: str, value, choices) -> None:
  if value not in choices:
    raise ConfigError(f"--config.{key}={value!r} is unknown; choose one of: {', '.join(choices)}")


def _positive(config: ml_collections.ConfigDict, *keys: str) -> None:
  for key in keys:
    value = _get(config, key)
    if not value > 0:
      raise ConfigError(f"--config.{key} must be > 0, got {value!r}")


def _get(config: ml_collections.ConfigDict, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


# Step counters and seeds are 32-bit on the device (and in numpy's seeding): stay inside.
MAX_STEPS = 2**31 - 1
MAX_SEED = 2**31 - 1


def _numbers(value, key: str = ""):
  """(dotted key, number) for every number in the config, inside tuples too."""
  if isinstance(value, (ml_collections.ConfigDict, dict)):
    for name, item in value.items():
      yield from _numbers(item, f"{key}.{name}" if key else name)
  elif isinstance(value, (list, tuple)):
    for item in value:
      yield from _numbers(item, key)
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    yield key, value


def _supported_paths(config: ml_collections.ConfigDict) -> None:
  """A URL other than gs:// in a path key, before anything (the kernels' line) is printed."""
  for key in ("data.data_dir", "data.manual_dir", "init_from"):
    try:
      storage.check_supported(_get(config, key) or "")
    except storage.UnsupportedURL as error:
      raise ConfigError(f"--config.{key}: {error}") from None


def _finite(config: ml_collections.ConfigDict) -> None:
  """NaN or inf anywhere (epochs, warm-up, boundaries, rates) only crashes later."""
  for key, value in _numbers(config):
    if not math.isfinite(value):
      raise ConfigError(f"--config.{key} must be a finite number, got {value!r}")


def _ranges(config: ml_collections.ConfigDict) -> None:
  if not 0 <= config.seed <= MAX_SEED:
    raise ConfigError(f"--config.seed must be in [0, {MAX_SEED}], got {config.seed}")
  for key in ("num_train_steps", "eval_every_steps", "checkpoint_every_steps",
              "log_every_steps"):
    if config[key] > MAX_STEPS:
      raise ConfigError(f"--config.{key}={config[key]} is above {MAX_STEPS} steps")
  if any(not 0 <= epoch for epoch in config.schedule.boundaries_epochs):
    raise ConfigError("--config.schedule.boundaries_epochs must be >= 0, got "
                      f"{tuple(config.schedule.boundaries_epochs)}")


def validate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> None:
  """Epoch counts that make more steps than a run can count (1e30 epochs, say)."""
  checked = {"num_epochs": config.num_epochs if config.num_train_steps <= 0 else 0,
             "eval_every_epochs": config.eval_every_epochs if config.eval_every_steps <= 0
             else 0,
             "schedule.warmup_epochs": config.schedule.warmup_epochs,
             "schedule.boundaries_epochs": max(config.schedule.boundaries_epochs, default=0)}
  for key, epochs in checked.items():
    if epochs * steps_per_epoch > MAX_STEPS:
      raise ConfigError(f"--config.{key}={epochs!r} epochs of {steps_per_epoch} steps is "
                        f"above {MAX_STEPS} steps; use fewer epochs")


def validate(config: ml_collections.ConfigDict, *, device_count: int, process_count: int) -> None:
  """Raises ConfigError (one line) for the first problem found."""
  _supported_paths(config)
  _finite(config)
  _ranges(config)
  _choice("model.name", config.model.name, MODEL_NAMES)
  _choice("data.name", config.data.name, DATASET_NAMES)
  _choice("optimizer.name", config.optimizer.name, optim.OPTIMIZER_NAMES)
  _choice("optimizer.weight_decay_type", config.optimizer.weight_decay_type,
          optim.WEIGHT_DECAY_TYPES)
  _choice("schedule.name", config.schedule.name, optim.SCHEDULE_NAMES)
  _choice("dtype", config.dtype, ("float32", "bfloat16"))
  _choice("nan_policy", config.nan_policy, ("stop", "skip_step"))
  _choice("kernels", config.kernels, select.CHOICES)
  if config.kernels == "cpu_library":
    available, reason = select.cpu_library_usable()
    if not available:
      raise ConfigError("--config.kernels=cpu_library cannot run here "
                        f"({reason.splitlines()[0]}); pip install -e '.[onednn]', or use auto "
                        "or xla")
  _positive(config, "batch_size", "eval_batch_size", "log_every_steps", "steps_per_dispatch",
            "checkpoint_every_steps", "keep_checkpoints", "optimizer.learning_rate")
  if config.num_train_steps <= 0:
    _positive(config, "num_epochs")
  if config.eval_every_steps <= 0:
    _positive(config, "eval_every_epochs")
  for key in ("optimizer.momentum", "label_smoothing", "schedule.decay_factor",
              "stop_at_accuracy"):
    if not 0 <= _get(config, key) <= 1:
      raise ConfigError(f"--config.{key} must be in [0, 1], got {_get(config, key)!r}")
  if config.data.validation_examples < 0:
    raise ConfigError("--config.data.validation_examples must be >= 0 (0: no validation split)")
  if config.optimizer.weight_decay < 0 or config.schedule.warmup_epochs < 0:
    raise ConfigError("--config.optimizer.weight_decay and --config.schedule.warmup_epochs "
                      "must be >= 0")
  if list(config.schedule.boundaries_epochs) != sorted(config.schedule.boundaries_epochs):
    raise ConfigError("--config.schedule.boundaries_epochs must be increasing, got "
                      f"{tuple(config.schedule.boundaries_epochs)}")
  for key in ("batch_size", "eval_batch_size"):
    # Any batch fits any device count (padded: rir_jax.data.batching), but the processes
    # must be able to share the padded rows evenly.
    rows = batching.padded_size(config[key], device_count)
    if rows % process_count:
      raise ConfigError(f"--config.{key}={config[key]} fills {rows} rows on {device_count} "
                        f"devices, which {process_count} processes cannot share evenly; "
                        "give every process the same number of devices")


def distributed(coordinator_address: str | None, num_processes: int | None,
                process_id: int | None) -> None:
  """The multi-process flags, before JAX tries to connect with them."""
  if not coordinator_address:
    return
  if num_processes is None or process_id is None:
    raise UsageError("--coordinator_address needs --num_processes and --process_id")
  if not 0 <= process_id < num_processes:
    raise UsageError(f"--process_id={process_id} must be in [0, {num_processes})")
  host, _, port = coordinator_address.rpartition(":")
  if not port.isdigit():
    raise UsageError(f"--coordinator_address={coordinator_address!r} must be host:port")
  if process_id == 0:  # the coordinator binds this port: fail now, not in a crash later
    with socket.socket() as probe:
      # As the coordinator does: a port whose last run died (TIME_WAIT) is free to re-use.
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        probe.bind((host, int(port)))
      except OSError as error:
        raise UsageError(f"coordinator port {port} on {host} is not free ({error.strerror}); "
                         "pick another --coordinator_address port") from error


def backend() -> None:
  """JAX's devices, or one line saying why there are none (JAX_PLATFORMS=cuda, no GPU)."""
  try:
    jax.devices()
  except Exception as error:  # noqa: BLE001 - RuntimeError, or an assert for an unknown platform
    platforms = os.environ.get("JAX_PLATFORMS", "")
    raise UsageError(f"JAX cannot start its devices (JAX_PLATFORMS={platforms!r}: "
                     f"{one_line(error)[:300]}); check the accelerator and its drivers, or "
                     "set JAX_PLATFORMS=cpu") from error


def config_keys(config: ml_collections.ConfigDict) -> None:
  """validate() on this process's devices; a config not derived from default.py is named."""
  try:
    validate(config, device_count=jax.device_count(), process_count=jax.process_count())
  except (AttributeError, KeyError) as error:
    raise UsageError(f"--config lacks a key every config has ({one_line(error)}); start it "
                     "from configs/default.py's get_config()") from error


def dataset_fits(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """The batch against the loaded training split (after any validation examples left it)."""
  examples = len(dataset.train_labels)
  if examples < config.batch_size:
    raise ConfigError(f"--config.batch_size={config.batch_size} is larger than the "
                      f"{examples} training examples of {config.data.name}")
  validate_schedule(config, batching.steps_per_epoch(examples, config.batch_size))


def model(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """Builds the model abstractly: bad model keys, or batches too big for memory, fail here."""
  image_shape = dataset.train_images.shape[1:]
  try:
    built = trainer.make_model(config, dataset.num_classes)
    activations = memory_check.activation_bytes(built, image_shape)
  except (TypeError, ValueError) as error:
    raise UsageError(f"--config.model: {one_line(error)}") from error
  if config.init_from:
    warm_start.check(config, built, image_shape, dataset.num_classes)
  memory_check.check_batches(config, activations, image_shape, len(dataset.test_labels))
