"""Time to accuracy: wall seconds from the start of training to a recipe's first eval at a target.

  python -m benchmarks.time_to_accuracy --preset=mnist --manual_dir=../shared/data/mnist
  python -m benchmarks.time_to_accuracy --preset=fashion_mnist \
      --manual_dir=../shared/data/fashion_mnist --seeds=3
  python -m benchmarks.time_to_accuracy --preset=cifar10_jpeg \
      --manual_dir=../shared/data/cifar10_jpeg          # ~13 minutes a seed, 2-core CPU
  python -m benchmarks.time_to_accuracy --config=configs/fast.py:dataset=mnist --target=0.995 \
      --manual_dir=../shared/data/mnist --eval_every_epochs=0.25 --config.batch_size=256 \
      --out=benchmarks/results/tta_mnist_b256

The data is loaded before the clock starts; then each seed trains in this process through
launch.py's loop (rir_jax.loop), in a fresh workdir (OUT/runs/seedN), with
stop_at_accuracy=TARGET: the run ends at its first eval that reaches it. A seed's wall time
covers building and compiling the model, training, the evals and the final checkpoint; its
CPU seconds (all threads) divided by the cores says about what a quiet machine would take
where other jobs share the CPU. Writes OUT/results.json and OUT/results.md (the table, then
one raw JSON line per seed) and prints the table.
"""
from __future__ import annotations

from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import argparse
import ast
import dataclasses
import importlib.util
import json
import os
import pathlib
import platform
import shutil
import statistics
import sys
import time

import jax
import ml_collections

from rir_jax import checks, loop, metrics
from rir_jax import workdir as workdir_lib
from rir_jax.data import DataError, validation


@dataclasses.dataclass(frozen=True)
class Preset:
  config: str
  target: float


# The project's time-to-accuracy goals: a recipe and the test accuracy it must reach.
PRESETS = {
    "mnist": Preset("configs/fast.py:dataset=mnist", 0.995),
    "fashion_mnist": Preset("configs/fast.py:dataset=fashion_mnist", 0.93),
    "cifar10_jpeg": Preset("configs/fast.py:dataset=cifar10_jpeg", 0.85),
}
REPO = pathlib.Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
  """The flags, plus `overrides`: every --config.KEY=VALUE, as launch.py takes them."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              epilog="Any --config.KEY=VALUE changes the recipe, as in launch.py.")
  p.add_argument("--preset", choices=PRESETS, help="a goal: its recipe and target")
  p.add_argument("--config", help="recipe: configs/NAME.py[:ARG] (default: the preset's)")
  p.add_argument("--target", type=float, help="test accuracy to reach (default: the preset's)")
  p.add_argument("--seeds", type=int, default=3, help="number of seeds: 0 .. seeds-1")
  p.add_argument("--eval_every_epochs", type=float,
                 help="evaluate every this fraction of an epoch (default: the recipe's)")
  p.add_argument("--manual_dir", help="folder of the dataset's original files (offline)")
  p.add_argument("--data_dir", help="TFDS data_dir (default: TFDS's)")
  p.add_argument("--out", type=pathlib.Path,
                 help="output folder (default: benchmarks/results/tta_PRESET)")
  args, rest = p.parse_known_args(argv)
  args.overrides = config_overrides(p, rest)
  preset = PRESETS.get(args.preset)
  if preset is None and (args.config is None or args.target is None):
    p.error("give --preset, or --config and --target")
  args.config = args.config or preset.config
  args.target = preset.target if args.target is None else args.target
  if args.out is None:
    args.out = REPO / "benchmarks" / "results" / f"tta_{args.preset or 'custom'}"
  return args


def config_overrides(parser: argparse.ArgumentParser, rest: list[str]) -> list[str]:
  """The KEY=VALUE of each --config.KEY=VALUE left over by `parser`; any other is an error."""
  bad = [arg for arg in rest if not (arg.startswith("--config.") and "=" in arg)]
  if bad:
    parser.error(f"unrecognized arguments: {' '.join(bad)}")
  return [arg[len("--config."):] for arg in rest]


def load_recipe(spec: str, overrides: list[str]) -> ml_collections.ConfigDict:
  """configs/NAME.py[:ARG]'s config with KEY=VALUE overrides (a Python literal, else a
  string), as launch.py's --config.KEY=VALUE flags set them."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for item in overrides:
    key, _, text = item.partition("=")
    *parents, last = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    try:
      node[last] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      node[last] = text
  return config


def seed_config(recipe: ml_collections.ConfigDict, seed: int, target: float,
                eval_every_epochs: float | None) -> ml_collections.ConfigDict:
  config = recipe.copy_and_resolve_references()
  config.seed = seed
  config.stop_at_accuracy = target
  if eval_every_epochs is not None:
    config.eval_every_epochs = eval_every_epochs
    config.eval_every_steps = -1
  config.checkpoint_every_steps = checks.MAX_STEPS  # one save: the run's last step
  config.keep_checkpoints = 1
  return config


def run_seed(config: ml_collections.ConfigDict, dataset, workdir: pathlib.Path) -> dict:
  """Trains one seed in a fresh workdir; its time, speed and where it reached the target."""
  if workdir.exists():
    shutil.rmtree(workdir)
  workdir_lib.claim(workdir, config, main=True)
  cpu, start = time.process_time(), time.perf_counter()
  final = loop.train_and_evaluate(config, workdir, dataset)
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  lines = metrics.read_metrics(workdir / "metrics.jsonl")
  evals = [line for line in lines if "eval/accuracy" in line]
  reached = next((line for line in evals if line["eval/accuracy"] >= config.stop_at_accuracy),
                 None)
  speeds = [line["train/images_per_sec"] for line in lines
            if "train/images_per_sec" in line][1:]  # the first includes warm-up
  return {
      "seed": config.seed, "wall_seconds": wall, "cpu_seconds": cpu,
      "compile_seconds": next(line["train/compile_seconds"] for line in lines
                              if "train/compile_seconds" in line),
      "images_per_sec": statistics.median(speeds) if speeds else None,
      "reached": reached is not None,
      "step": reached["step"] if reached else None,
      "epoch": reached["train/epoch"] if reached else None,
      "accuracy": reached["eval/accuracy"] if reached else None,
      "final_accuracy": final["eval/accuracy"],
      "evals": [(line["step"], line["eval/accuracy"]) for line in evals],
  }


def summarize(runs: list[dict]) -> dict:
  """Medians over seeds; a seed that missed the target counts as never reaching it."""
  times = [run["wall_seconds"] if run["reached"] else float("inf") for run in runs]
  median = statistics.median(times)
  hits = [run for run in runs if run["reached"]]
  return {
      "reached": len(hits), "seeds": len(runs),
      "median_seconds_to_target": median if median != float("inf") else None,
      "median_wall_seconds": statistics.median(run["wall_seconds"] for run in runs),
      "median_cpu_seconds": statistics.median(run["cpu_seconds"] for run in runs),
      "median_epochs_to_target": statistics.median(run["epoch"] for run in hits) if hits else None,
      "median_images_per_sec": statistics.median(run["images_per_sec"] for run in runs
                                                 if run["images_per_sec"]),
  }


def _number(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def table(results: dict) -> str:
  """The markdown table: a line per seed, then the median."""
  rows = ["| seed | reached | step | epoch | accuracy | wall s | CPU s | compile s | img/s |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for run in results["runs"]:
    rows.append(f"| {run['seed']} | {'yes' if run['reached'] else 'no'} | "
                f"{_number(run['step'], 'd')} | {_number(run['epoch'], '.2f')} | "
                f"{_number(run['accuracy'], '.4f')} | {run['wall_seconds']:.1f} | "
                f"{run['cpu_seconds']:.1f} | {run['compile_seconds']:.1f} | "
                f"{_number(run['images_per_sec'], '.0f')} |")
  s = results["summary"]
  rows.append(f"| median | {s['reached']}/{s['seeds']} | | "
              f"{_number(s['median_epochs_to_target'], '.2f')} | | "
              f"{_number(s['median_seconds_to_target'], '.1f')} | "
              f"{s['median_cpu_seconds']:.1f} | | {_number(s['median_images_per_sec'], '.0f')} |")
  head = (f"Time to {results['target']:.2%} test accuracy: {results['recipe']} "
          f"{' '.join('--config.' + o for o in results['overrides'])}".rstrip())
  return "\n".join([head, "", *rows])


def write(results: dict, out: pathlib.Path) -> str:
  text = table(results)
  (out / "results.json").write_text(json.dumps(results, indent=1))
  raw = "\n".join(json.dumps(run) for run in results["runs"])
  (out / "results.md").write_text(f"{text}\n\nRaw, one line per seed:\n\n```\n{raw}\n```\n"
                                  f"\n`{results['command']}`\n")
  return text


def main(argv=None) -> int:
  args = parse_args(argv)
  recipe = load_recipe(args.config, args.overrides)
  recipe.data.manual_dir = args.manual_dir or recipe.data.manual_dir
  recipe.data.data_dir = args.data_dir or recipe.data.data_dir
  host_memory.reuse_freed_memory()
  try:
    checks.validate(seed_config(recipe, 0, args.target, args.eval_every_epochs),
                          device_count=jax.device_count(), process_count=1)
    dataset = validation.load_for_config(recipe.data)
  except (checks.ConfigError, DataError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  args.out.mkdir(parents=True, exist_ok=True)
  runs = []
  load = os.getloadavg()[0]
  for seed in range(args.seeds):
    print(f"== seed {seed}", flush=True)
    config = seed_config(recipe, seed, args.target, args.eval_every_epochs)
    runs.append(run_seed(config, dataset, args.out / "runs" / f"seed{seed}"))
  results = {
      "command": " ".join(["python -m benchmarks.time_to_accuracy", *(argv or sys.argv[1:])]),
      "recipe": args.config, "overrides": args.overrides, "target": args.target,
      "dataset": dataset.description, "device_kind": jax.devices()[0].device_kind,
      "cpu_cores": os.cpu_count(), "load_average_before": load,
      "load_average_after": os.getloadavg()[0], "jax": jax.__version__,
      "python": platform.python_version(), "summary": summarize(runs), "runs": runs,
      "config": workdir_lib.config_json(seed_config(recipe, 0, args.target,
                                                    args.eval_every_epochs)),
  }
  print(write(results, args.out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
