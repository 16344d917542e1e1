"""A loaded model over many images, on every local device, as the training evals run it.

`split_totals` is the training loop's own eval program (rir_jax.train.evaluate) on the
same batches and shardings, so its accuracy is the run's, bit for bit; `logits` gives
each example's logits for what a sum cannot say (top-5, confusion, predictions).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rir_jax import parallel, train, trainer
from rir_jax.data import feeding
from rir_jax.loading import Trained


def _step_config(trained: Trained) -> train.StepConfig:
  """What evaluation needs of a StepConfig (no optimizer: nothing is trained)."""
  pre = trained.preprocess
  return train.StepConfig(model=trained.model, tx=None, schedule=None,
                          num_classes=pre.num_classes, augmentation="none", mean=pre.mean,
                          std=pre.std, dtype=trainer.DTYPES[pre.dtype])


def _state(trained: Trained, mesh) -> train.TrainState:
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=trained.variables["params"],
                           batch_stats=trained.variables["batch_stats"], opt_state=(),
                           rng=jnp.zeros((2,), jnp.uint32), skipped_steps=jnp.zeros((), jnp.int32))
  return jax.device_put(state, parallel.replicated(mesh))


def split_totals(trained: Trained, images: np.ndarray, labels: np.ndarray, *,
                 batch_size: int) -> dict[str, float]:
  """{"loss_sum", "correct", "count"} over a split, exactly as the training evals sum them."""
  mesh = parallel.make_mesh()
  batches = feeding.eval_batches(images, labels, global_batch=batch_size, mesh=mesh)
  program = jax.jit(functools.partial(train.evaluate, cfg=_step_config(trained)),
                    in_shardings=(parallel.replicated(mesh),
                                  parallel.stacked_batches_sharded(mesh)),
                    out_shardings=parallel.replicated(mesh))
  return {k: float(v) for k, v in jax.device_get(program(_state(trained, mesh), batches)).items()}


def logits(trained: Trained, images: np.ndarray, *, batch_size: int) -> np.ndarray:
  """float32 (N, classes) logits of uint8 NHWC images, in batches of `batch_size`."""
  mesh = parallel.make_mesh()
  cfg = _step_config(trained)
  labels = np.zeros(len(images), np.int32)
  batches = feeding.eval_batches(images, labels, global_batch=batch_size, mesh=mesh)

  def all_logits(state, stacked):
    def one_batch(_, batch):
      inputs = trained.preprocess(batch["image"])  # the function training applies
      out = cfg.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                            inputs, train=False)
      return None, out.astype(jnp.float32)
    return jax.lax.scan(one_batch, None, stacked)[1]

  program = jax.jit(all_logits, in_shardings=(parallel.replicated(mesh),
                                              parallel.stacked_batches_sharded(mesh)),
                    out_shardings=parallel.stacked_batches_sharded(mesh))
  out = np.asarray(jax.device_get(program(_state(trained, mesh), batches)))
  return out.reshape(-1, out.shape[-1])[:len(images)]
