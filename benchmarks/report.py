"""results.json -> results.md (a table a README can embed), curves.png, throughput.png."""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np


def wall(seconds: float | None) -> str:
  """A model's mean wall s/run; "n/a" where every run was resumed (a part of its time)."""
  return "n/a" if seconds is None else f"{seconds:.0f}"


def _fmt_speed(value) -> str:
  return f"{value:,.0f}" if value else "n/a"


def markdown(results: dict) -> str:
  rows = [
      f"Dataset: {results['dataset']} ({results['train_examples']:,} train / "
      f"{results['test_examples']:,} test), {results['seeds']} seed(s), "
      f"{results['device_count']} x {results['device_kind']}, jax {results['jax']}, "
      # Results from before conv_impl existed ran on XLA.
      f"{results.get('convolutions', 'xla')} convolutions.",
      "",
      "| model | params | fwd MFLOPs/img | test accuracy (mean ± std) | per seed | test loss "
      "| train img/s | compile s | wall s/run |",
      "|---|---:|---:|---|---|---:|---:|---:|---:|",
  ]
  for m in results["models"]:
    seeds = ", ".join(f"{100 * r['eval/accuracy']:.2f}" for r in m["runs"])
    rows.append(
        f"| {m['model']} | {m['params'] / 1e6:.3f}M | {m['forward_flops_per_example'] / 1e6:.1f} "
        f"| {100 * m['accuracy_mean']:.2f}% ± {100 * m['accuracy_std']:.2f} | {seeds} "
        f"| {m['loss_mean']:.4f} | {_fmt_speed(m['images_per_sec'])} "
        f"| {m['compile_seconds']:.1f} | {wall(m['wall_seconds_mean'])} |")
  rows += ["", f"Command: `{results['command']}`", ""]
  return "\n".join(rows)


def _series(runs: list[dict], key: str):
  """x (epochs) and a seeds x points array of `key`, on the points every seed has."""
  per_run = [[(p["train/epoch"], p[key]) for p in r["curve"] if key in p and "train/epoch" in p]
             for r in runs]
  n = min(len(points) for points in per_run)
  x = np.array([e for e, _ in per_run[0][:n]])
  return x, np.array([[v for _, v in points[:n]] for points in per_run], dtype=float)


def curves(results: dict, path: pathlib.Path) -> None:
  """Test accuracy and training loss against epochs; the band spans the seeds (min to max)."""
  fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
  for m in results["models"]:
    for ax, key in ((acc_ax, "eval/accuracy"), (loss_ax, "train/loss")):
      x, y = _series(m["runs"], key)
      if key == "eval/accuracy":
        y = 100 * y
      mean = y.mean(0)
      # Markers and min-max bars keep a curve of one eval (a one-epoch run) visible.
      line, = ax.plot(x, mean, marker="o" if len(x) <= 20 else None,
                      label=f"{m['model']} ({m['params'] / 1e6:.2f}M)")
      ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.25)
      if len(x) <= 20:
        ax.errorbar(x, mean, yerr=[mean - y.min(0), y.max(0) - mean], fmt="none",
                    ecolor=line.get_color(), capsize=4)
  acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{results['dataset']}: test accuracy")
  loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss", yscale="log")
  acc_ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def throughput(results: dict, path: pathlib.Path) -> None:
  names = [m["model"] for m in results["models"]]
  speeds = [m["images_per_sec"] or 0.0 for m in results["models"]]
  fig, ax = plt.subplots(figsize=(6, 3.5))
  bars = ax.bar(names, speeds, color="tab:blue")
  ax.bar_label(bars, fmt="%.0f")
  ax.set(ylabel="training images/s", title=f"training throughput ({results['device_kind']})")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_all(results: dict, out: pathlib.Path) -> None:
  (out / "results.md").write_text(markdown(results))
  curves(results, out / "curves.png")
  throughput(results, out / "throughput.png")
