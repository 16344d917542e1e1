"""Defaults every experiment config starts from; experiment files change only what differs."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from rir_jax import models


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """`config.model` for model `name`: its name and every argument with its default.

  Derived from the model's own fields, so each argument is a --config.model.* key and a
  key of another model is refused. dtype and kernels are set from top-level keys.
  """
  return ml_collections.ConfigDict({"name": name, **models.model_defaults(name), **overrides})


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Every key under `model` except `name` is passed to rir_jax.models.get_model.
  config.model = model_config("rir")

  config.data = ml_collections.ConfigDict()
  config.data.name = "cifar10"
  config.data.data_dir = config_dict.placeholder(str)    # default: TFDS's (~/tensorflow_datasets)
  config.data.manual_dir = config_dict.placeholder(str)  # folder of the original files, offline
  config.data.download = True
  # > 0: that many training examples held out (the same ones for the same N and
  # validation_seed) for the evals during training; the test split is evaluated once, at
  # the end. 0: evals run on the test split, as they always did.
  config.data.validation_examples = 0
  config.data.validation_seed = 0

  config.batch_size = 128          # global, over all devices and processes
  config.eval_batch_size = 1000    # global; the test split is padded to whole batches
  config.num_epochs = 10.0
  config.num_train_steps = -1      # > 0 overrides num_epochs

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"               # sgd | adamw
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 1e-4
  config.optimizer.weight_decay_type = "l2"   # l2 (through the momentum) | decoupled

  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = "piecewise"          # piecewise | cosine | constant
  config.schedule.boundaries_epochs = (5.0, 8.0)
  config.schedule.decay_factor = 0.1
  config.schedule.warmup_epochs = 0.0

  config.label_smoothing = 0.0
  config.dtype = "float32"          # float32 | bfloat16 (compute; parameters stay float32)
  # The models' kernels: xla | cpu_library (oneDNN's convolutions and the project's batch
  # norm kernels; CPU, `pip install -e '.[onednn]'`) | auto (the library on a CPU where it
  # loads, else XLA). The same math either way (rounding aside): only speed differs.
  # (Formerly conv_impl=xla|onednn|auto, still read: rir_jax/renamed.py.)
  config.kernels = "auto"

  # Train steps per dispatch: > 1 runs that many steps in one compiled program (a scan over
  # stacked batches), sparing the host a launch and a wait per step (rir_jax/dispatch.py).
  # Logs, evals and checkpoints still land on their steps. Same math: on the CPU kernel
  # library the same bits; on XLA's kernels another rounding, like another device layout.
  config.steps_per_dispatch = 1
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0
  config.eval_every_steps = -1      # > 0 overrides eval_every_epochs
  # > 0: the run ends, as a finished one (that step checkpointed), at the first eval whose
  # accuracy reaches this fraction (0.995): test accuracy, or validation where held out.
  config.stop_at_accuracy = 0.0
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3

  # Warm start: parameters from another run's workdir or an exported file (rir_jax.export).
  config.init_from = config_dict.placeholder(str)
  config.init_batch_stats = True    # take its batch-norm statistics too
  config.init_new_head = False      # re-initialise parameters sized by another class count

  config.nan_policy = "stop"        # stop (exit 1, step named) | skip_step (skip, count)
  config.allow_config_change = False  # resume a workdir written with another config
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any experiment to a few seconds on a laptop CPU: same code path, tiny budget."""
  config.batch_size = 32
  config.eval_batch_size = 256
  config.num_train_steps = 12
  config.schedule.boundaries_epochs = ()
  config.log_every_steps = 4
  config.eval_every_steps = 12
  config.checkpoint_every_steps = 6
  if config.data.name.startswith("cifar"):
    # No CIFAR archive on a fresh offline machine: smoke-test the CIFAR path on
    # synthetic images of the same shape (never to be read as accuracy).
    config.data.name = "synthetic"
  if config.model.name == "rir_paper":  # 9.5M parameters: a CPU takes seconds per step
    config.batch_size, config.eval_batch_size = 16, 128
    config.num_train_steps = config.eval_every_steps = 4
    config.checkpoint_every_steps = 2
  return config


def parse_arg(arg: str | None, choices: dict | None = None,
              **defaults) -> ml_collections.ConfigDict:
  """`configs/NAME.py:a=1,b,c=x` -> {a: 1, b: True, c: 'x'} over `defaults` (big_vision's form).

  Each value takes the type of its default; a bare name sets a boolean to True. `choices`
  maps an argument to the values it may take.
  """
  args = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; choose from: {', '.join(defaults)}")
    kind = type(defaults[key])
    if kind is bool:
      if value not in ("", "True", "true", "1", "False", "false", "0"):
        raise ValueError(f"config argument {key} takes true or false, not {value!r}")
      args[key] = value in ("", "True", "true", "1")
    else:
      args[key] = kind(value)
  for key, allowed in (choices or {}).items():
    if args[key] not in allowed:
      raise ValueError(f"unknown config argument {key}={args[key]}; "
                       f"choose {key}={'|'.join(allowed)}")
  return args
