"""Up-front checks of a resolved config, so mistakes cost one line, not a crashed run."""
from __future__ import annotations

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


def validate(config: ml_collections.ConfigDict, *, device_count: int, process_count: int) -> None:
  """Raises ConfigError (one line) for the first problem found."""
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
  for key in ("optimizer.momentum", "label_smoothing", "schedule.decay_factor"):
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
