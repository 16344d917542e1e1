"""Up-front checks of a resolved config, so mistakes cost one line, not a crashed run."""
from __future__ import annotations

import math

import ml_collections

from rir_jax import ops, optim
from rir_jax.data import DATASET_NAMES, pipeline
from rir_jax.models import MODEL_NAMES


class ConfigError(ValueError):
  """A config value that cannot work; the message says which key and what to do."""


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
  _choice("conv_impl", config.conv_impl, ops.IMPLS)
  if config.conv_impl == "onednn":
    available, reason = ops.onednn_usable()
    if not available:
      raise ConfigError(f"--config.conv_impl=onednn cannot run here ({reason.splitlines()[0]}); "
                        "pip install -e '.[onednn]', or use auto or xla")
  _positive(config, "batch_size", "eval_batch_size", "log_every_steps",
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
    # Any batch fits any device count (padded: rir_jax.data.pipeline), but the processes
    # must be able to share the padded rows evenly.
    rows = pipeline.padded_size(config[key], device_count)
    if rows % process_count:
      raise ConfigError(f"--config.{key}={config[key]} fills {rows} rows on {device_count} "
                        f"devices, which {process_count} processes cannot share evenly; "
                        "give every process the same number of devices")
