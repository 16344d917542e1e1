"""Where the PyTorch replica's CPU step spends its time: torch.profiler, summed by kind.

  python -m benchmarks.profile_torch                          # resnet, bfloat16, compiled
  python -m benchmarks.profile_torch --mode=eager --dtype=float32

The counterpart of benchmarks/profile_step.py for the step benchmarks/throughput.py
times on the PyTorch side (benchmarks/torch_models.TrainStep, batch 128 by default), so
that the two frameworks' steps can be compared operation kind by operation kind. After
warm-up (torch.compile compiles in it), traces `--steps` steps and sums the self time of
the CPU operations by kind: the convolutions by pass (oneDNN's, through ATen), the
kernels Inductor generated (`cpp_fused_*`, and the graphs that call them), batch norm,
elementwise and other ATen operations. Self time: an operation's time minus that of the
operations it calls, so that nothing counts twice. Prints one JSON object per kind, then
a summary with the traced and untraced step times.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time

import torch
from torch import profiler

from benchmarks import throughput, torch_models
from rir_jax import data

WARMUP_STEPS = 10
# Operation name -> kind, the first pattern that the name contains wins.
KINDS = (
    ("convolution_backward", "convolution: backward (input and weight gradients)"),
    ("mkldnn_convolution", "convolution: forward"),
    ("cpp_fused_", "Inductor's generated kernels"),
    ("Compiled", "Inductor's graphs, around their kernels"),
    ("Torch-Compiled Region", "Inductor's graphs, around their kernels"),
    ("batch_norm", "batch norm (ATen)"),
    ("mkldnn_", "other oneDNN operations"),
    ("aten::copy_", "copies and conversions (ATen)"),
    ("aten::to", "copies and conversions (ATen)"),
    ("aten::_to_copy", "copies and conversions (ATen)"),
)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="resnet", help="resnet, rir, rir_paper, cnn")
  p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
  p.add_argument("--mode", default="compile", choices=["eager", "compile"])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=5,
                 help="steps timed untraced, then traced and summed")
  return p.parse_args(argv)


def operation_kind(name: str) -> str:
  for pattern, kind in KINDS:
    if pattern in name:
      return kind
  return "other ATen operations" if name.startswith("aten::") else f"other: {name}"


def summarize(events, steps: int) -> list[dict]:
  """Self CPU time per kind, ms per step, largest first."""
  totals, calls = collections.Counter(), collections.Counter()
  for event in events:
    kind = operation_kind(event.key)
    totals[kind] += event.self_cpu_time_total / 1e3 / steps  # microseconds in total
    calls[kind] += event.count // steps
  return [{"kind": kind, "ms_per_step": ms, "calls_per_step": calls[kind]}
          for kind, ms in totals.most_common()]


def untraced_step_ms(step, steps: int) -> float:
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return (time.perf_counter() - start) / steps * 1e3


def main(argv=None) -> int:
  args = parse_args(argv)
  if throughput.torch_device() != "cpu":
    print("error: profiles the CPU step; PyTorch sees an accelerator here", file=sys.stderr)
    return 2
  # Inductor's CPU kernels show in the profile by name only when it is told to.
  torch._inductor.config.cpp.enable_kernel_profile = True
  config = throughput.bench_config(args.model, args.batch, args.dtype, {})
  replica = torch_models.TrainStep(config, data.load_dataset("synthetic"), "cpu",
                                   compiled=args.mode == "compile")
  for _ in range(WARMUP_STEPS):
    replica.step()
  untraced = untraced_step_ms(replica.step, args.steps)
  with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as trace:
    start = time.perf_counter()
    for _ in range(args.steps):
      replica.step()
    traced = (time.perf_counter() - start) / args.steps * 1e3
  rows = summarize(trace.key_averages(), args.steps)
  for row in rows:
    print(json.dumps(row))
  print(json.dumps({"model": args.model, "dtype": args.dtype, "mode": args.mode,
                    "batch": args.batch, "steps": args.steps, "threads": torch.get_num_threads(),
                    "step_ms": traced, "untraced_step_ms": untraced,
                    "summed_ms": sum(r["ms_per_step"] for r in rows)}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
