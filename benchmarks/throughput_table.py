"""benchmarks/throughput.py's JSON lines -> the Markdown table in the README.

  python benchmarks/throughput_table.py benchmarks/results/throughput_cpu.jsonl
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

LABELS = {"resnet": "ResNet-20", "rir": "RiR", "rir_paper": "RiR (paper)", "cnn": "CNN"}
HEADER = ("model", "dtype", "batch", "convolutions", "JAX img/s", "PyTorch img/s",
          "JAX / PyTorch", "JAX GFLOP/s", "of peak (GFLOP/s)", "compile s", "eval img/s",
          "input pipeline share", "CPU used by others")
LEFT_ALIGNED = {"model", "dtype", "convolutions", "of peak (GFLOP/s)"}  # numbers: right


def _number(value, fmt: str) -> str:
  return "n/a" if value is None else format(value, fmt)


def row(line: dict, first_of_model: bool) -> list[str]:
  label = LABELS.get(line["model"], line["model"])
  if first_of_model:
    label += f" (`{line['model']}`, {line['params']:,} params)"
  return [
      label, line["dtype"], str(line["batch"]), line.get("kernels", line.get("conv_impl")),
      _number(line["jax_images_per_sec"], ",.0f"),
      _number(line["torch_images_per_sec"], ",.0f"), _number(line["ratio"], ".2f"),
      _number(line["jax_gflops_per_sec"], ",.1f"),
      f"{line['fraction_of_peak']:.0%} ({line['peak_gflops_per_sec']:,.0f})",
      _number(line["jax_compile_seconds"], ".1f"),
      _number(line["eval_images_per_sec"], ",.0f"),
      _number(line["input_pipeline_share"], "+.1%"),
      _number(line["host_cpu_used_by_others"], ".1%"),
  ]


def markdown(lines: list[dict]) -> str:
  table = ["| " + " | ".join(HEADER) + " |",
           "| " + " | ".join("---" if h in LEFT_ALIGNED else "---:" for h in HEADER) + " |"]
  seen = set()
  for line in lines:
    table.append("| " + " | ".join(row(line, line["model"] not in seen)) + " |")
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
