"""The train state and the pure step functions: (state, batch) -> (state, metrics).

Nothing here has side effects; `rir_jax.loop` compiles these with `jax.jit` over the
data mesh and drives them.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rir_jax.data import augment as augment_lib

PyTree = Any


@struct.dataclass
class TrainState:
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jax.Array          # raw uint32 key data, so checkpoints hold plain arrays
  skipped_steps: jax.Array  # updates skipped for a non-finite loss (nan_policy=skip_step)


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What the step functions need besides the state: all static under jit."""
  model: nn.Module
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  num_classes: int
  augmentation: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  dtype: Any = jnp.float32
  label_smoothing: float = 0.0
  skip_nonfinite: bool = False
  # Where the global batch is padded to fill every device: its examples, the leading
  # rows; the rest count nowhere (rir_jax.data.batching.batch_rows). None: no padding.
  examples_per_batch: int | None = None


def create_train_state(step_config: StepConfig, seed: int | jax.Array,
                       image_shape: tuple[int, ...]) -> TrainState:
  """Initial parameters, BatchNorm statistics and optimizer state, all from `seed` (a
  Python int or a traced int32: the same key, jax.random.PRNGKey's [0, seed])."""
  rng = jax.random.PRNGKey(seed)
  init_key, data_key = jax.random.split(rng)
  dummy = jnp.zeros((1, *image_shape), step_config.dtype)
  variables = step_config.model.init(init_key, dummy, train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=step_config.tx.init(params), rng=data_key,
      skipped_steps=jnp.zeros((), jnp.int32))


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy on logits (the only softmax in the project)."""
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def _inputs(cfg: StepConfig, images: jax.Array) -> jax.Array:
  return augment_lib.normalize(images, jnp.asarray(cfg.mean), jnp.asarray(cfg.std), cfg.dtype)


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               cfg: StepConfig) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on the global batch; augmentation keyed by (seed, step).

  Padding rows (see StepConfig.examples_per_batch) count nowhere: not in the loss, its
  gradients, batch norm's statistics or the metrics.
  """
  key = jax.random.fold_in(state.rng, state.step)
  images = augment_lib.augment(batch["image"], key, cfg.augmentation, cfg.examples_per_batch)
  inputs = _inputs(cfg, images)
  mask = _example_mask(len(images), cfg.examples_per_batch)
  masked = {} if mask is None else {"mask": mask}

  def loss_fn(params):
    logits, new_vars = cfg.model.apply(
        {"params": params, "batch_stats": state.batch_stats}, inputs, train=True,
        mutable=["batch_stats"], **masked)
    losses = cross_entropy(logits, batch["label"], cfg.num_classes, cfg.label_smoothing)
    return _mean(losses, mask), (logits, new_vars["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  # Overflow can leave the loss finite but the new weights not: check both, so that no
  # checkpoint (saved only after finite steps) ever holds inf weights.
  finite = jnp.isfinite(loss) & _all_finite(new_state.params)
  if cfg.skip_nonfinite:
    new_state = _keep_old_unless(finite, new_state, state)
  metrics = {
      "loss": loss,
      "accuracy": _mean(jnp.argmax(logits, -1) == batch["label"], mask),
      "learning_rate": cfg.schedule(state.step),
      "finite": finite,
  }
  return new_state, metrics


def train_steps(state: TrainState, batches: dict[str, jax.Array], *,
                cfg: StepConfig) -> tuple[TrainState, dict[str, jax.Array]]:
  """`train_step` over batches stacked as (steps, batch, ...), in one program.

  One dispatch for several steps: the host neither launches nor waits per step, which
  matters where a step is short next to its launch (accelerators, small models). The
  metrics come back stacked, one row per step.
  """
  return jax.lax.scan(lambda s, batch: train_step(s, batch, cfg=cfg), state, batches)


def _example_mask(rows: int, num_examples: int | None) -> jax.Array | None:
  """True for the leading `num_examples` of `rows`; None where every row is an example
  (the unpadded step then stays exactly what it was without masks)."""
  if num_examples is None or num_examples == rows:
    return None
  return jnp.arange(rows) < num_examples


def _mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean over the examples: the rows where `mask` is True (all of them if None)."""
  if mask is None:
    return jnp.mean(values)
  return jnp.sum(jnp.where(mask, values, 0)) / jnp.sum(mask)


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _keep_old_unless(ok: jax.Array, new: TrainState, old: TrainState) -> TrainState:
  """Takes `new` where the step was good, else `old` with the step counted as skipped.

  The step counter still advances so the data order stays that of an uninterrupted run.
  """
  pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)
  return new.replace(
      params=pick(new.params, old.params), batch_stats=pick(new.batch_stats, old.batch_stats),
      opt_state=pick(new.opt_state, old.opt_state),
      skipped_steps=old.skipped_steps + (~ok).astype(jnp.int32))


def eval_step(state: TrainState, batch: dict[str, jax.Array], totals: dict[str, jax.Array], *,
              cfg: StepConfig) -> dict[str, jax.Array]:
  """Adds this batch's sums over its real (unpadded) examples to `totals`, so means are exact."""
  logits = cfg.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                           _inputs(cfg, batch["image"]), train=False)
  mask = batch["mask"].astype(jnp.float32)
  losses = cross_entropy(logits, batch["label"], cfg.num_classes)
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  return {"loss_sum": totals["loss_sum"] + jnp.sum(losses * mask),
          "correct": totals["correct"] + jnp.sum(correct * mask),
          "count": totals["count"] + jnp.sum(mask)}


def evaluate(state: TrainState, batches: dict[str, jax.Array], *,
             cfg: StepConfig) -> dict[str, jax.Array]:
  """Totals over a whole split stacked as (num_batches, batch, ...), in ONE program.

  One program, not one per batch: independent programs with collectives can deadlock
  XLA's CPU thread pool when they interleave across (fake) devices.
  """
  zeros = {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "correct", "count")}
  body = lambda totals, batch: (eval_step(state, batch, totals, cfg=cfg), None)
  return jax.lax.scan(body, zeros, batches)[0]

