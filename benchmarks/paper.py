"""The paper's table: CNN, ResNet, ResNet Init and RiR (configs/paper.py), over seeds, with
the significance of every difference.

  python -m benchmarks.paper --dataset=cifar10 --scale=paper --seeds=3 --out=runs/paper_c10
  python -m benchmarks.paper --dataset=cifar10_jpeg --scale=cpu --seeds=3 \
      --manual_dir=../shared/data/cifar10_jpeg --out=benchmarks/results/paper_cpu
  python -m benchmarks.paper --smoke --out=/tmp/paper      # every row, seconds each

Trains through launch.py's loop, one workdir per (row, seed) under OUT/runs/, seeds in
the outer loop (an interrupted study has whole seeds of every row); re-running resumes
an interrupted run from its checkpoint and reuses finished ones; SIGTERM, SIGINT or SIGHUP
(a preempted VM) stop the run in training at a step, checkpointed, as launch.py stops
(exit 128 + the signal). `--report_only` writes
the table from the runs finished so far. Writes OUT/results.json, OUT/results.md and
OUT/curves.png.
"""
from __future__ import annotations

from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import argparse
import json
import pathlib
import platform
import statistics
import sys

import flax
import jax

from benchmarks import compare, report, significance
from configs import paper
from rir_jax import renamed, stopping
from rir_jax.kernels import select

# The paper's published test accuracy, where one is recorded (scale=paper only).
PUBLISHED = {("cifar10", "rir"): 0.9499, ("cifar100", "rir"): 0.7710}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="cifar10",
                 choices=["cifar10", "cifar100", "cifar10_jpeg", "synthetic"])
  p.add_argument("--scale", default="paper", choices=paper.SCALES)
  p.add_argument("--rows", default=",".join(paper.ROWS), help="subset of: " + ",".join(paper.ROWS))
  p.add_argument("--seeds", type=int, default=3, help="number of seeds: 0 .. seeds-1")
  p.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs")
  p.add_argument("--manual_dir", default=None)
  p.add_argument("--data_dir", default=None)
  p.add_argument("--out", required=True, type=pathlib.Path)
  p.add_argument("--smoke", action="store_true", help="12 steps per run on synthetic images")
  p.add_argument("--report_only", action="store_true",
                 help="train nothing: the table of the runs finished so far")
  args = p.parse_args(argv)
  args.rows = args.rows.split(",")
  unknown = sorted(set(args.rows) - set(paper.ROWS))
  if unknown:
    p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(paper.ROWS)}")
  if args.smoke:
    args.dataset = "synthetic"
  return args


def row_config(row: str, seed: int, args: argparse.Namespace):
  config = paper.get_config(f"row={row},scale={args.scale}" + (",smoke" if args.smoke else ""))
  config.data.name = args.dataset
  config.data.manual_dir = args.manual_dir
  config.data.data_dir = args.data_dir
  config.seed = seed
  if args.epochs is not None:
    config.num_epochs = args.epochs
  return config


def last_epoch_gain(run: dict) -> float | None:
  """Test accuracy gained between the last two evaluations (one epoch apart)."""
  evals = [p["eval/accuracy"] for p in run["curve"] if "eval/accuracy" in p]
  return evals[-1] - evals[-2] if len(evals) >= 2 else None


def summarize_row(row: str, config, dataset, runs: list[dict], args) -> dict:
  summary = compare.summarize(row, compare.model_facts(config, dataset), runs)
  gains = [g for g in map(last_epoch_gain, runs) if g is not None]
  summary["last_epoch_gain_mean"] = statistics.mean(gains) if gains else None
  summary["published"] = PUBLISHED.get((args.dataset, row)) if args.scale == "paper" else None
  summary["model_config"] = config.model.to_dict()
  return summary


def markdown(results: dict) -> str:
  lines = [
      f"Dataset: {results['dataset']} ({results['train_examples']:,} train / "
      f"{results['test_examples']:,} test), scale {results['scale']}, "
      f"{results['device_count']} x {results['device_kind']}, jax {results['jax']}, "
      f"{results['convolutions']} convolutions.",
      "",
      "| row | params | fwd MFLOPs/img | seeds | test accuracy (mean ± std) | per seed "
      "| paper | last-epoch gain | train img/s | wall s/run |",
      "|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
  ]
  for m in results["rows"]:
    seeds = ", ".join(f"{100 * r['eval/accuracy']:.2f}" for r in m["runs"])
    published = f"{100 * m['published']:.2f}%" if m["published"] else "-"
    gain = (f"{100 * m['last_epoch_gain_mean']:+.2f}"
            if m["last_epoch_gain_mean"] is not None else "-")
    lines.append(
        f"| {m['model']} | {m['params'] / 1e6:.3f}M | {m['forward_flops_per_example'] / 1e6:.1f} "
        f"| {len(m['runs'])} | {100 * m['accuracy_mean']:.2f}% ± {100 * m['accuracy_std']:.2f} "
        f"| {seeds} | {published} | {gain} | {report._fmt_speed(m['images_per_sec'])} "
        f"| {report.wall(m['wall_seconds_mean'])} |")
  lines += ["", "wall s/run: the mean over runs trained in one process (a resumed run's time "
            "covers only its last part; n/a where every run was resumed).", "",
            "Differences (Welch's t, 95% confidence interval over seeds):", ""]
  lines += [f"- {significance.sentence(c)}" for c in results["differences"]]
  lines += ["", f"Command: `{results['command']}`"]
  if results["runs_finished"] < results["runs_planned"]:
    lines += ["", f"Runs finished so far: {results['runs_finished']} of "
              f"{results['runs_planned']}; the same command continues the study."]
  lines.append("")
  return "\n".join(lines)


def main(argv=None) -> int:
  args = parse_args(argv)
  dataset = compare.prepare(args)
  if dataset is None:
    return 2
  return stopping.orderly(lambda signals: _study(args, argv, dataset, signals))


def _study(args, argv, dataset, signals) -> int:
  runs = {row: [] for row in args.rows}
  for seed in range(args.seeds):
    for row in args.rows:
      config, workdir = row_config(row, seed, args), args.out / "runs" / row / f"seed{seed}"
      result = compare.finished(config, workdir)
      if result is None and not args.report_only:
        print(f"== {row} seed {seed}", flush=True)
        result = compare.run_one(config, dataset, workdir, signals)
      if result is not None:
        runs[row].append(result)
  rows = [summarize_row(row, row_config(row, 0, args), dataset, runs[row], args)
          for row in args.rows if runs[row]]
  if not rows:
    print("no finished runs yet", file=sys.stderr)
    return 1
  accuracies = {m["model"]: [r["eval/accuracy"] for r in m["runs"]] for m in rows}
  training_argv = [a for a in (argv or sys.argv[1:]) if a != "--report_only"]
  results = {
      "command": " ".join(["python", "-m", "benchmarks.paper", *training_argv]),
      "runs_finished": sum(len(r) for r in runs.values()),
      "runs_planned": args.seeds * len(args.rows),
      "dataset": args.dataset, "scale": args.scale,
      "train_examples": len(dataset.train_labels), "test_examples": len(dataset.test_labels),
      "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
      "convolutions": select.resolve(renamed.saved(rows[0]["runs"][0]["config"])["kernels"]),
      "jax": jax.__version__, "flax": flax.__version__, "python": platform.python_version(),
      "rows": rows, "differences": significance.pairwise(accuracies),
  }
  (args.out / "results.json").write_text(json.dumps(results, indent=1))
  (args.out / "results.md").write_text(markdown(results))
  report.curves({"dataset": args.dataset, "models": rows}, args.out / "curves.png")
  print((args.out / "results.md").read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
