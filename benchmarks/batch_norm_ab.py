"""The models' batch norm (rir_jax.kernels.batch_norm) against flax's, in one process.

  python -m benchmarks.batch_norm_ab                        # resnet,rir; f32,bf16; oneDNN
  python -m benchmarks.batch_norm_ab --models=resnet --dtype=bfloat16 --kernels=xla

Builds each model's training step twice, the second time with every batch norm
replaced by `flax.linen.BatchNorm` followed by `nn.relu` (rir_jax.models.layers.BatchNorm,
the models' default, the same function), and times the steps in alternating blocks on one synthetic batch,
as benchmarks/throughput.py times JAX against PyTorch. Where the convolutions run on
the CPU kernel library, a third step has the batch norm's passes on XLA instead of on
the library's kernels (rir_jax.kernels.batch_norm). Prints one JSON object per
(model, dtype): milliseconds per step of each, flax's over ours (`speedup`) and, with
the third step, its time over ours (`kernels_speedup`). Runs on any backend, so an
accelerator can check that the hand-written backward pass does not cost it anything.
"""
from __future__ import annotations

from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import argparse
import json
import sys
from unittest import mock

import jax

from benchmarks import throughput
from rir_jax import data
from rir_jax.kernels import batch_norm as batch_norm_kernels, select
from rir_jax.models import layers


def _with_flax_batch_norm(modules):
  """`select.modules` with flax's batch norm as every norm."""
  return lambda kernels: {**modules(kernels), "norm": layers.BatchNorm,
                          "stream_norm": layers.BatchNorm}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet,rir")
  p.add_argument("--dtype", default="float32,bfloat16")
  p.add_argument("--kernels", "--conv_impl", default="auto",
                 choices=(*select.CHOICES, *select.OLD_NAMES))
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=60, help="timed steps of each")
  p.add_argument("--warmup", type=int, default=30,
                 help="untimed steps of each first (compile, and the heap settling)")
  return p.parse_args(argv)


def compare(model: str, dtype: str, args: argparse.Namespace, dataset) -> dict:
  config = throughput.bench_config(model, args.batch, dtype, {},
                                   select.canonical(args.kernels))
  ours = throughput.JaxBench(config, dataset, eval_batch=args.batch)
  steps = {"ours": ours.step}
  with mock.patch.object(select, "modules", _with_flax_batch_norm(select.modules)):
    steps["flax"] = throughput.JaxBench(config, dataset, eval_batch=args.batch).step
  kernels = select.resolve(args.kernels)
  if kernels == "cpu_library":  # ours runs its passes on the kernels: time it without
    with mock.patch.object(batch_norm_kernels, "applies", lambda *arrays: False):
      steps["xla_passes"] = throughput.JaxBench(config, dataset, eval_batch=args.batch).step
  seconds = throughput.time_interleaved(steps, args.steps, args.warmup)
  row = {"model": model, "dtype": dtype, "batch": args.batch, "kernels": kernels,
         **{f"{name}_step_ms": s * 1e3 for name, s in seconds.items()},
         "speedup": seconds["flax"] / seconds["ours"]}
  if "xla_passes" in seconds:
    row["kernels_speedup"] = seconds["xla_passes"] / seconds["ours"]
  return {**row, "steps": args.steps, "device_kind": jax.devices()[0].device_kind,
          "jax_version": jax.__version__}


def main(argv=None) -> int:
  args = parse_args(argv)
  host_memory.reuse_freed_memory()  # as launch.py does
  dataset = data.load_dataset("synthetic")
  for model in args.models.split(","):
    for dtype in args.dtype.split(","):
      print(json.dumps(compare(model, dtype, args, dataset)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
