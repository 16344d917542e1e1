"""The compiled programs of one run: the train state, the train steps and the eval, over one
mesh of every device (rir_jax.loop schedules them).

In a multi-process run every program is compiled before its first run, and the processes
then wait for each other on JAX's coordination service (rir_jax.parallel.wait_for_peers):
a program's first collective must not start while a peer is still compiling.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from rir_jax import models, optim, parallel, train
from rir_jax.data import Dataset, batching
from rir_jax.kernels import select

if TYPE_CHECKING:  # the schedule's type only: rir_jax.loop imports this module
  from rir_jax.loop import Plan

log = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_model(config: ml_collections.ConfigDict, num_classes: int):
  """The config's model, on the kernels it names (chosen once per process)."""
  kwargs = models.config_arguments(config.model.name, config.model)
  return select.build_model(config.model.name, num_classes=num_classes,
                            kernels=config.kernels, dtype=DTYPES[config.dtype], **kwargs)


def make_step_config(config: ml_collections.ConfigDict, dataset: Dataset, plan: Plan,
                     device_count: int | None = None) -> train.StepConfig:
  """The step functions' static configuration; `device_count` (default: all devices)
  decides whether the global batch is fed padded (rir_jax.data.batching.padded_size)."""
  schedule = optim.learning_rate_schedule(config, plan.steps_per_epoch, plan.total_steps)
  rows = batching.padded_size(config.batch_size, device_count or jax.device_count())
  return train.StepConfig(
      model=make_model(config, dataset.num_classes),
      tx=optim.make_optimizer(config, schedule), schedule=schedule,
      num_classes=dataset.num_classes, augmentation=dataset.augmentation,
      mean=tuple(float(m) for m in dataset.mean), std=tuple(float(s) for s in dataset.std),
      dtype=DTYPES[config.dtype], label_smoothing=config.label_smoothing,
      skip_nonfinite=config.nan_policy == "skip_step",
      examples_per_batch=config.batch_size if rows != config.batch_size else None)


class Trainer:
  """The compiled steps over one mesh, plus the state they update."""

  def __init__(self, config: ml_collections.ConfigDict, dataset: Dataset, plan: Plan,
               mesh: Mesh | None = None):
    self.mesh = mesh if mesh is not None else parallel.make_mesh()
    self.cfg = make_step_config(config, dataset, plan, self.mesh.size)
    _log_padding(config, self.mesh.size)
    rep, data = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
    image_shape = dataset.train_images.shape[1:]
    # The seed is an argument, not a constant of the program: one program serves every
    # seed, so a run of another seed finds it in the persistent compilation cache.
    create = jax.jit(lambda seed: train.create_train_state(self.cfg, seed, image_shape),
                     out_shardings=rep)
    seed = np.int32(config.seed)  # checks.config_keys holds it to [0, 2**31 - 1]
    self.state = create.lower(seed).compile(init_compiler_options())(seed)
    # The state's program took each process its own time to compile; the first collective
    # on the state (the checkpoint manager's) must not wait on a peer still compiling it.
    parallel.wait_for_peers("train state created")
    self._train = jax.jit(functools.partial(train.train_step, cfg=self.cfg),
                          in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0)
    self._stacked = parallel.stacked_batches_sharded(self.mesh)
    self._train_several = jax.jit(functools.partial(train.train_steps, cfg=self.cfg),
                                  in_shardings=(rep, self._stacked), out_shardings=(rep, rep),
                                  donate_argnums=0)
    self._eval = jax.jit(functools.partial(train.evaluate, cfg=self.cfg),
                         in_shardings=(rep, parallel.stacked_batches_sharded(self.mesh)),
                         out_shardings=rep)
    self._eval_compiled = {}  # by the shapes of the split's stacked batches
    self.compile_seconds = None

  def compile(self, example_batch, steps_per_dispatch: tuple[int, ...] = (1,)
              ) -> jax.stages.Compiled:
    """Ahead-of-time compiles the programs of these dispatch lengths (1: the single step;
    k: k steps at once) from one step's batch, and returns the first (its HLO, its cost
    analysis); `compile_seconds` keeps the cost of compiling apart from step time."""
    start = time.perf_counter()
    compiled = []
    for steps in steps_per_dispatch:
      if steps == 1:
        self._train = self._train.lower(self.state, example_batch).compile()
        compiled.append(self._train)
      else:
        stacked = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
            (steps, *x.shape), x.dtype, sharding=self._stacked), example_batch)
        self._train_several = self._train_several.lower(self.state, stacked).compile()
        compiled.append(self._train_several)
    self.compile_seconds = time.perf_counter() - start  # not the wait for slower peers
    parallel.wait_for_peers("train steps compiled")
    return compiled[0]

  def step(self, batch):
    self.state, step_metrics = self._train(self.state, batch)
    return step_metrics

  def steps(self, batches):
    """Several steps in one dispatch, on batches stacked as (steps, batch, ...); the
    metrics come stacked the same way."""
    self.state, step_metrics = self._train_several(self.state, batches)
    return step_metrics

  def evaluate(self, batches, prefix: str = "eval") -> dict[str, float]:
    """Loss and accuracy over a split: `eval/...` for the test split, `val/...` for validation."""
    shapes = tuple(sorted((name, array.shape) for name, array in batches.items()))
    if shapes not in self._eval_compiled:
      self._eval_compiled[shapes] = self._eval.lower(self.state, batches).compile()
      parallel.wait_for_peers("eval compiled")
    summed = jax.device_get(self._eval_compiled[shapes](self.state, batches))
    count = float(summed["count"])
    return {f"{prefix}/loss": float(summed["loss_sum"]) / count,
            f"{prefix}/accuracy": float(summed["correct"]) / count,
            f"{prefix}/examples": int(count)}


def init_compiler_options() -> dict | None:
  """The initial state's program runs once, but on the CPU backend LLVM spent most of its
  compile time optimising it (its random-number code): on 8 CPU devices ResNet-20's took
  9.6 s, 3.2 s unoptimised, RiR's 19.6 s and 15.6 s (benchmarks/results/startup). Its
  values move by float32 rounding, the same in every process and layout."""
  return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def _log_padding(config: ml_collections.ConfigDict, device_count: int) -> None:
  """Says once which batches are fed padded: their cost, and that it is not a mistake."""
  for key in ("batch_size", "eval_batch_size"):
    rows = batching.padded_size(config[key], device_count)
    if rows != config[key]:
      log.info("%s %d is fed as %d rows over %d devices: %d padding rows, masked out of "
               "the loss, gradients, batch norm and metrics", key, config[key], rows,
               device_count, rows - config[key])
