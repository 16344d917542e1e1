"""RiR's stream batch norms on the kernels' sums ("on") against XLA's ("off", today's
default), one process, alternating blocks.

  python -m benchmarks.results.stream_norm_kernels.ab rir bfloat16 on,off 80

(PERFORMANCE.md, section 16.) Compiles throughput.py's step (batch 128, the CPU kernel
library) once per variant, with `stream_norm` taking the kernels' sums or not; every other
batch norm as the code is. Prints each step's scratch memory, then one JSON line: images/s
of each and "on"'s speed over "off"'s.
"""
from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import functools
import json
import os
import sys

from benchmarks import throughput
from rir_jax import data
from rir_jax.kernels import batch_norm, select

_today = select._modules


def _with_stream_sums(kernel_sums: bool):
  def modules(resolved):
    return {**_today(resolved),
            "stream_norm": functools.partial(batch_norm.BatchNorm, kernel_sums=kernel_sums)}
  return modules


def main(model: str, dtype: str, order: str, count: str) -> None:
  host_memory.reuse_freed_memory()
  dataset = data.load_dataset("synthetic")
  benches = {}
  for variant in order.split(","):
    select._modules = _with_stream_sums(variant == "on")  # read when the model is built
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
