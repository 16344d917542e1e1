"""What a run costs before its first step on the CPU: the initial state's compile, and the
first checkpoint save.

For each model (the CIFAR recipe's ResNet-20 and RiR, batch 128, on all local devices):
the initial state's program compiled with XLA's default options and with the options
rir_jax.trainer uses (no LLVM optimisation), and the largest difference between the two
states relative to each parameter's largest entry; then the first save of that state with
Orbax's default array handler (replica-parallel on the CPU) and with whole arrays
(rir_jax.checkpoint.save_whole_arrays_on_cpu), each into a fresh folder in a fresh manager.

XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.results.startup.run
"""
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from configs import cifar
from rir_jax import loop, parallel, train, trainer


class _Cifar:  # what make_step_config reads of a dataset
  num_classes, augmentation, mean, std = 10, "crop_flip", (0.5,) * 3, (0.25,) * 3


def _compile_seconds(lowered, options):
  start = time.perf_counter()
  compiled = lowered.compile(options)
  return time.perf_counter() - start, compiled


def _largest_difference(a, b) -> float:
  def relative(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)) if x.size else 0.0
  floats = lambda tree: [leaf for leaf in jax.tree.leaves(tree) if leaf.dtype.kind == "f"]
  return max(relative(x, y) for x, y in zip(floats(a), floats(b)))


def _first_save_seconds(state, whole_arrays: bool) -> float:
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=not whole_arrays),
      override=True)
  with tempfile.TemporaryDirectory() as folder:
    manager = ocp.CheckpointManager(folder)
    start = time.perf_counter()
    manager.save(1, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    seconds = time.perf_counter() - start
    manager.close()
  return seconds


def main() -> None:
  mesh = parallel.make_mesh()
  # Orbax's one-time set-up, so that neither timed save pays it.
  _first_save_seconds({"x": jax.device_put(np.zeros(3), parallel.replicated(mesh))}, True)
  print(f"{jax.device_count()} CPU devices; trainer options {trainer.init_compiler_options()}")
  for name in ("resnet", "rir"):
    config = cifar.get_config(f"model={name}")
    plan = loop.Plan(390, 1000, 390, 1000, 100)
    cfg = trainer.make_step_config(config, _Cifar, plan, mesh.size)
    lowered = jax.jit(lambda cfg=cfg, seed=config.seed: train.create_train_state(
        cfg, seed, (32, 32, 3)), out_shardings=parallel.replicated(mesh)).lower()
    default_s, default = _compile_seconds(lowered, None)
    ours_s, ours = _compile_seconds(lowered, trainer.init_compiler_options())
    state = ours()
    difference = _largest_difference(jax.device_get(ours()), jax.device_get(default()))
    # Whole arrays first: the replica-parallel save compiles what it slices, and a second
    # save of the same shapes would find those programs compiled.
    whole_s = _first_save_seconds(state, whole_arrays=True)
    split_s = _first_save_seconds(state, whole_arrays=False)
    print(f"{name}: initial state compile {default_s:.1f} s default, {ours_s:.1f} s trainer's "
          f"options ({default_s / ours_s:.1f}x), states differ by {difference:.2g} of a "
          f"parameter's largest entry; first save {split_s:.1f} s replica-parallel, "
          f"{whole_s:.1f} s whole arrays")


if __name__ == "__main__":
  main()
