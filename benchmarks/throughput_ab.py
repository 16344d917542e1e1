"""Two sets of benchmarks/throughput.py runs, A and B, side by side: a Markdown table.

  python -m benchmarks.throughput_ab --a='DIR/throughput_before_r*.jsonl' \
      --b='DIR/throughput_after_r*.jsonl'

Each file is one run (interleave A's and B's runs, so both see the same machine). Per
(model, batch, dtype) row: every run's JAX training img/s, the medians, and B / A of the
medians, beside the ratio the runs' own spread could give alone (the largest over the
smallest of either side), so a change reads as beyond noise only when it is.
"""
from __future__ import annotations

import argparse
import glob
import json
import pathlib
import statistics
import sys


def read_runs(pattern: str) -> list[list[dict]]:
  """One list of lines per file matching `pattern`, in name order."""
  files = sorted(glob.glob(pattern))
  if not files:
    raise SystemExit(f"throughput_ab: no file matches {pattern}")
  return [[json.loads(text) for text in pathlib.Path(name).read_text().splitlines()
           if text.strip()] for name in files]


def speeds(runs: list[list[dict]]) -> dict[tuple, list[float]]:
  """(model, batch, dtype) -> JAX training img/s of each run that measured it."""
  table: dict[tuple, list[float]] = {}
  for lines in runs:
    for line in lines:
      key = (line["model"], line["batch"], line["dtype"])
      table.setdefault(key, []).append(line["jax_images_per_sec"])
  return table


def markdown(a: dict[tuple, list[float]], b: dict[tuple, list[float]]) -> str:
  rows = ["| model | batch | dtype | A img/s (runs) | B img/s (runs) | A median | B median "
          "| B / A | spread within A, B |",
          "|---|---:|---|---|---|---:|---:|---:|---:|"]
  for key in sorted(a.keys() & b.keys()):
    med_a, med_b = statistics.median(a[key]), statistics.median(b[key])
    runs_a = ", ".join(f"{s:.0f}" for s in a[key])
    runs_b = ", ".join(f"{s:.0f}" for s in b[key])
    rows.append(f"| {key[0]} | {key[1]} | {key[2]} | {runs_a} | {runs_b} | {med_a:.0f} "
                f"| {med_b:.0f} | {med_b / med_a:.3f} | {max(a[key]) / min(a[key]):.2f}, "
                f"{max(b[key]) / min(b[key]):.2f} |")
  return "\n".join(rows) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--a", required=True, help="glob of A's JSON-lines files, one per run")
  p.add_argument("--b", required=True, help="glob of B's JSON-lines files, one per run")
  args = p.parse_args(argv)
  sys.stdout.write(markdown(speeds(read_runs(args.a)), speeds(read_runs(args.b))))
  return 0


if __name__ == "__main__":
  sys.exit(main())
