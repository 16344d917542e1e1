"""Batch norm's input fenced (today) against unfenced, one process, alternating blocks.

  python -m benchmarks.results.bn_input_fence.ab resnet bfloat16 on,off 80

(PERFORMANCE.md, section 14.) Compiles throughput.py's step (batch 128, the CPU kernel
library) twice: once as the code is, once with the `optimization_barrier` in
`rir_jax/kernels/batch_norm.py` replaced by the identity. Prints each step's scratch
memory, then one JSON line: images/s of each and the fenced step's speed over the other's.
"""
import json
import os
import sys

import jax

from benchmarks import throughput
from rir_jax import data, host_memory
from rir_jax.kernels import batch_norm


class _UnfencedLax:
  def __getattr__(self, name):
    return (lambda x: x) if name == "optimization_barrier" else getattr(jax.lax, name)


class _UnfencedJax:
  lax = _UnfencedLax()

  def __getattr__(self, name):
    return getattr(jax, name)


def main(model: str, dtype: str, order: str, count: str) -> None:
  host_memory.reuse_freed_memory()
  dataset = data.load_dataset("synthetic")
  benches = {}
  for variant in order.split(","):
    batch_norm.jax = jax if variant == "on" else _UnfencedJax()  # read when the step traces
    config = throughput.bench_config(model, 128, dtype, {}, "cpu_library")
    benches[variant] = throughput.JaxBench(config, dataset, 128)
    scratch = benches[variant].compiled_step.memory_analysis().temp_size_in_bytes
    print(f"{variant}: scratch {scratch / 2**20:.1f} MiB", file=sys.stderr)
  seconds = throughput.time_interleaved({v: b.step for v, b in benches.items()}, int(count), 5)
  print(json.dumps({"model": model, "dtype": dtype, "order": order.split(","),
                    "on_over_off": seconds["off"] / seconds["on"],
                    **{f"{v}_img_s": round(128 / s, 1) for v, s in seconds.items()},
                    "tunables": os.environ.get("GLIBC_TUNABLES")}))


if __name__ == "__main__":
  main(*sys.argv[1:])
