"""What a run costs before its first step on the CPU: the initial state's compile, and the
first checkpoint save.

For each model (the CIFAR recipe's ResNet-20 and RiR, batch 128, on all local devices):
the initial state's program compiled with XLA's default options and with the options
rir_jax.trainer uses (no LLVM optimisation), and the largest difference between the two
states relative to each parameter's largest entry; then the first save of that state with
Orbax's default array handler (replica-parallel on the CPU) and with whole arrays
(rir_jax.checkpoint.save_whole_arrays_on_cpu), each into a fresh folder in a fresh manager;
then what a run of another seed pays for the initial state: its program takes the seed as
an argument, so it comes from the persistent compilation cache (a fresh folder, with
launch.py's stable keys), against a compile of its own with the seed as a constant.

XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.results.startup.run
"""
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from configs import cifar
from rir_jax import compile_cache, loop, parallel, train, trainer


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


def _init_program(cfg, mesh, seed: int | None = None):
  """The initial state's program as rir_jax.trainer lowers it (the seed an argument), or
  with `seed` a constant of the program."""
  out = parallel.replicated(mesh)
  if seed is None:
    return jax.jit(lambda s: train.create_train_state(cfg, s, (32, 32, 3)),
                   out_shardings=out).lower(np.int32(0))
  return jax.jit(lambda: train.create_train_state(cfg, seed, (32, 32, 3)),
                 out_shardings=out).lower()


def _another_seed_seconds(cfg, mesh) -> tuple[float, float]:
  """(from the cache, compiled anew with the seed a constant): the initial state's compile
  in a run of seed 1 after a run of seed 0."""
  options = trainer.init_compiler_options()
  _compile_seconds(_init_program(cfg, mesh), options)  # seed 0's run writes the entry
  cached_s, _ = _compile_seconds(_init_program(cfg, mesh), options)
  constant_s, _ = _compile_seconds(_init_program(cfg, mesh, seed=1), options)
  return cached_s, constant_s


def main() -> None:
  mesh = parallel.make_mesh()
  # A fresh persistent cache with launch.py's keys; before this, every program compiled
  # below is one the cache has not seen, so the default-vs-options timings are compiles.
  jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="startup_cache_"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  compile_cache.stable_keys()
  # Orbax's one-time set-up, so that neither timed save pays it.
  _first_save_seconds({"x": jax.device_put(np.zeros(3), parallel.replicated(mesh))}, True)
  print(f"{jax.device_count()} CPU devices; trainer options {trainer.init_compiler_options()}")
  for name in ("resnet", "rir"):
    config = cifar.get_config(f"model={name}")
    plan = loop.Plan(390, 1000, 390, 1000, 100)
    cfg = trainer.make_step_config(config, _Cifar, plan, mesh.size)
    lowered = _init_program(cfg, mesh)
    default_s, default = _compile_seconds(lowered, None)
    ours_s, ours = _compile_seconds(lowered, trainer.init_compiler_options())
    seed = np.int32(config.seed)
    state = ours(seed)
    difference = _largest_difference(jax.device_get(state), jax.device_get(default(seed)))
    # Whole arrays first: the replica-parallel save compiles what it slices, and a second
    # save of the same shapes would find those programs compiled.
    whole_s = _first_save_seconds(state, whole_arrays=True)
    split_s = _first_save_seconds(state, whole_arrays=False)
    cached_s, constant_s = _another_seed_seconds(cfg, mesh)
    print(f"{name}: initial state compile {default_s:.1f} s default, {ours_s:.1f} s trainer's "
          f"options ({default_s / ours_s:.1f}x), states differ by {difference:.2g} of a "
          f"parameter's largest entry; first save {split_s:.1f} s replica-parallel, "
          f"{whole_s:.1f} s whole arrays; another seed's initial state {cached_s:.1f} s from "
          f"the cache, {constant_s:.1f} s compiled with the seed a constant")


if __name__ == "__main__":
  main()
