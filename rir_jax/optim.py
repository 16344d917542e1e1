"""Optimizers and learning-rate schedules from the config, built from optax parts."""
from __future__ import annotations

import jax
import ml_collections
import optax

OPTIMIZER_NAMES = ("sgd", "adamw")
SCHEDULE_NAMES = ("piecewise", "cosine", "constant")
WEIGHT_DECAY_TYPES = ("l2", "decoupled")


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """The configured schedule, in steps, with an optional linear warm-up in front."""
  base = config.optimizer.learning_rate
  sched = config.schedule
  warmup = int(round(sched.warmup_epochs * steps_per_epoch))
  if sched.name == "piecewise":
    boundaries = {int(round(e * steps_per_epoch)) - warmup: sched.decay_factor
                  for e in sched.boundaries_epochs}
    main = optax.piecewise_constant_schedule(base, boundaries)
  elif sched.name == "cosine":
    main = optax.cosine_decay_schedule(base, max(total_steps - warmup, 1))
  else:
    main = optax.constant_schedule(base)
  if warmup == 0:
    return main
  ramp = optax.linear_schedule(0.0, base, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def decay_mask(params):
  """Weight decay on kernels only: BatchNorm scales and biases stay free.

  The ResNet Init identity is not a parameter at all, so no mask is needed for it.
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum, Nesterov) or AdamW with L2 or decoupled weight decay.

  "l2" adds wd * w to the gradient before the momentum/Adam statistics, which is the
  same as an L2 term 0.5 * wd * |w|^2 in the loss; "decoupled" adds it after them.
  """
  opt = config.optimizer
  if opt.name == "sgd":
    direction = optax.trace(decay=opt.momentum, nesterov=opt.nesterov)
  else:
    direction = optax.scale_by_adam()
  decay = optax.add_decayed_weights(opt.weight_decay, mask=decay_mask)
  parts = [decay, direction] if opt.weight_decay_type == "l2" else [direction, decay]
  return optax.chain(*parts, optax.scale_by_learning_rate(schedule))
