"""k steps in one scan (rir_jax.train.train_steps) against k single steps: how far apart.

  PYTHONPATH=. python benchmarks/results/dispatch_ab/scan_vs_steps.py MODEL KERNELS K
    (from the repository root; MODEL cnn|resnet|rir, KERNELS xla|cpu_library)

`configs/mnist.py:model=MODEL,smoke` on real MNIST (../shared/data/mnist), one device:
trains K steps one at a time and the same K steps as one scan from the same state, then
prints the largest absolute difference over the train state's arrays and the losses.
"""
import functools
import runpy
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rir_jax import train
from rir_jax.data import feeding, loader
from rir_jax.loop import make_plan
from rir_jax.trainer import Trainer

model, kernels, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = runpy.run_path("configs/mnist.py")["get_config"](f"model={model},smoke")
config.kernels = kernels
dataset = loader.load_dataset("mnist", manual_dir="../shared/data/mnist")
plan = make_plan(config, len(dataset.train_labels))
one, scanned = Trainer(config, dataset, plan), Trainer(config, dataset, plan)
batches = [feeding.train_batch(dataset.train_images, dataset.train_labels,
                               global_batch=config.batch_size, seed=config.seed,
                               mesh=one.mesh, step=s) for s in range(k)]
single_losses = [float(one.step(b)["loss"]) for b in batches]
several = jax.jit(functools.partial(train.train_steps, cfg=scanned.cfg))
state, metrics = several(scanned.state, jax.tree.map(lambda *xs: jnp.stack(xs), *batches))
a, b = jax.device_get(one.state), jax.device_get(state)
diffs = [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
         for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
print(f"{model} {kernels} k={k}: max abs difference {max(diffs):.3g}, "
      f"{sum(d == 0 for d in diffs)} of {len(diffs)} arrays equal; losses one at a time "
      f"{single_losses}, in one scan {[float(x) for x in metrics['loss']]}")
