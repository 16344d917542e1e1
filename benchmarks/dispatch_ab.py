"""Steps per dispatch, A/B: the training loop's images/s at each config.steps_per_dispatch.

  python -m benchmarks.dispatch_ab --config=configs/fast.py:dataset=mnist \
      --manual_dir=../shared/data/mnist --steps_per_dispatch=1,8 --steps=600 --rounds=3
  python -m benchmarks.dispatch_ab --config=configs/rir_cifar.py --config.dtype=bfloat16 \
      --config.data.name=synthetic --config.batch_size=500 --steps_per_dispatch=1,4,16

The whole loop of launch.py (rir_jax.loop: its input pipeline, logging, one eval and one
checkpoint at the end), not a bare step: dispatching several steps at once can only save
what the loop spends between steps. Each round trains `--steps` steps once per value, in
that order, so a noisy machine slows all alike; a run's speed is the median of its
train/images_per_sec lines after the first (which includes warm-up), as
benchmarks/time_to_accuracy.py measures a seed. Prints one JSON line
per run (--out appends them to a file) and then, per value, the median over rounds and
its ratio to the first value's.
"""
from __future__ import annotations

from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import argparse
import json
import pathlib
import statistics
import sys
import tempfile

import jax

from benchmarks import time_to_accuracy
from rir_jax import checks
from rir_jax.data import validation


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              epilog="Any --config.KEY=VALUE changes the config, as in launch.py.")
  p.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  p.add_argument("--steps_per_dispatch", default="1,8", help="values to compare, the first the base")
  p.add_argument("--steps", type=int, default=600, help="training steps per run")
  p.add_argument("--log_every", type=int, default=100, help="steps per images/s sample")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--manual_dir", help="folder of the dataset's original files (offline)")
  p.add_argument("--out", type=pathlib.Path, help="append the JSON lines to this file")
  args, rest = p.parse_known_args(argv)
  args.overrides = time_to_accuracy.config_overrides(p, rest)
  args.values = [int(v) for v in args.steps_per_dispatch.split(",")]
  return args


def run_config(recipe, steps_per_dispatch: int, steps: int, log_every: int):
  config = recipe.copy_and_resolve_references()
  config.steps_per_dispatch = steps_per_dispatch
  config.num_train_steps = config.eval_every_steps = steps
  config.log_every_steps = log_every
  config.checkpoint_every_steps = checks.MAX_STEPS  # one save: the last step
  config.keep_checkpoints = 1
  return config


def run_once(config, dataset) -> dict:
  """time_to_accuracy's run of one seed (no target: its one eval is the last step's)."""
  with tempfile.TemporaryDirectory() as folder:
    run = time_to_accuracy.run_seed(config, dataset, pathlib.Path(folder) / "run")
  return {"steps_per_dispatch": config.steps_per_dispatch, "steps": config.num_train_steps,
          "batch": config.batch_size, **{key: run[key] for key in (
              "images_per_sec", "wall_seconds", "compile_seconds")}}


def summary(runs: list[dict], values: list[int]) -> str:
  medians = {v: statistics.median(r["images_per_sec"] for r in runs
                                  if r["steps_per_dispatch"] == v) for v in values}
  rows = ["| steps per dispatch | img/s (median of rounds) | vs first | compile s |",
          "|---:|---:|---:|---:|"]
  for v in values:
    compile_s = statistics.median(r["compile_seconds"] for r in runs if r["steps_per_dispatch"] == v)
    rows.append(f"| {v} | {medians[v]:.0f} | {medians[v] / medians[values[0]]:.3f} | "
                f"{compile_s:.1f} |")
  return "\n".join(rows)


def main(argv=None) -> int:
  args = parse_args(argv)
  recipe = time_to_accuracy.load_recipe(args.config, args.overrides)
  recipe.data.manual_dir = args.manual_dir or recipe.data.manual_dir
  host_memory.reuse_freed_memory()
  dataset = validation.load_for_config(recipe.data)
  runs = []
  for round_index in range(args.rounds):
    for value in args.values:
      run = {"round": round_index, "config": args.config, "overrides": args.overrides,
             "device_kind": jax.devices()[0].device_kind,
             **run_once(run_config(recipe, value, args.steps, args.log_every), dataset)}
      runs.append(run)
      line = json.dumps(run)
      print(line, flush=True)
      if args.out is not None:
        with open(args.out, "a") as out:
          out.write(line + "\n")
  print(summary(runs, args.values))
  return 0


if __name__ == "__main__":
  sys.exit(main())
