"""benchmarks/throughput.py's JSON lines -> the Markdown table in the README.

  python -m benchmarks.throughput_table benchmarks/results/throughput_cpu.jsonl

PyTorch's columns are those of the modes some line timed: per mode its img/s and JAX's
over it, and torch.compile's compile time.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

TORCH_MODES = ("eager", "compile")
LABELS = {"resnet": "ResNet-20", "rir": "RiR", "rir_paper": "RiR (paper)", "cnn": "CNN"}
LEFT_ALIGNED = {"model", "dtype", "convolutions", "of peak (GFLOP/s)"}  # numbers: right
# Lines written before --torch_modes timed eager PyTorch only, under these names.
EAGER_BEFORE_MODES = {"torch_eager_images_per_sec": "torch_images_per_sec",
                      "jax_over_torch_eager": "ratio"}


def _number(value, fmt: str) -> str:
  return "n/a" if value is None else format(value, fmt)


def _field(line: dict, key: str):
  return line.get(key, line.get(EAGER_BEFORE_MODES.get(key)))


def timed_modes(lines: list[dict]) -> list[str]:
  return [mode for mode in TORCH_MODES
          if any(_field(line, f"torch_{mode}_images_per_sec") is not None for line in lines)]


def header(modes: list[str]) -> list[str]:
  torch_speeds = [title for mode in modes for title in (f"PyTorch {mode} img/s", f"JAX / {mode}")]
  compile_time = ["torch.compile s"] if "compile" in modes else []
  return ["model", "dtype", "batch", "convolutions", "JAX img/s", *torch_speeds,
          "JAX GFLOP/s", "of peak (GFLOP/s)", "JAX compile s", *compile_time, "eval img/s",
          "input pipeline share", "CPU used by others"]


def row(line: dict, first_of_model: bool, modes: list[str]) -> list[str]:
  label = LABELS.get(line["model"], line["model"])
  if first_of_model:
    label += f" (`{line['model']}`, {line['params']:,} params)"
  torch_speeds = [_number(_field(line, key), fmt) for mode in modes
                  for key, fmt in ((f"torch_{mode}_images_per_sec", ",.0f"),
                                   (f"jax_over_torch_{mode}", ".2f"))]
  compile_time = ([_number(line.get("torch_compile_seconds"), ".1f")]
                  if "compile" in modes else [])
  return [
      label, line["dtype"], str(line["batch"]), line.get("kernels", line.get("conv_impl")),
      _number(line["jax_images_per_sec"], ",.0f"), *torch_speeds,
      _number(line["jax_gflops_per_sec"], ",.1f"),
      f"{line['fraction_of_peak']:.0%} ({line['peak_gflops_per_sec']:,.0f})",
      _number(line["jax_compile_seconds"], ".1f"), *compile_time,
      _number(line["eval_images_per_sec"], ",.0f"),
      _number(line["input_pipeline_share"], "+.1%"),
      _number(line["host_cpu_used_by_others"], ".1%"),
  ]


def markdown(lines: list[dict]) -> str:
  modes = timed_modes(lines)
  titles = header(modes)
  table = ["| " + " | ".join(titles) + " |",
           "| " + " | ".join("---" if h in LEFT_ALIGNED else "---:" for h in titles) + " |"]
  seen = set()
  for line in lines:
    table.append("| " + " | ".join(row(line, line["model"] not in seen, modes)) + " |")
    seen.add(line["model"])
  return "\n".join(table) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("jsonl", type=pathlib.Path)
  args = p.parse_args(argv)
  lines = [json.loads(text) for text in args.jsonl.read_text().splitlines() if text.strip()]
  sys.stdout.write(markdown(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
