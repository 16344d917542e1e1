"""One change to the code, on against off: throughput.py's step (batch 128, the CPU kernel
library) compiled once per variant in one process, timed in alternating blocks.

The A/B scripts under benchmarks/results/ give `run` a `prepare(variant)` that switches
their change on ("on") or off ("off") before the variant's step is built. Prints each
step's scratch memory, then one JSON line: images/s of each and "on"'s speed over "off"'s.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Callable

from benchmarks import throughput
from rir_jax import data, host_memory

BATCH = 128
WARMUP = 5


def run(model: str, dtype: str, order: str, count: str, prepare: Callable[[str], None]) -> None:
  """`order`: "on,off" or "off,on", which variant compiles and runs first; `count` steps each."""
  host_memory.reuse_freed_memory()
  dataset = data.load_dataset("synthetic")
  benches = {}
  for variant in order.split(","):
    prepare(variant)
    config = throughput.bench_config(model, BATCH, dtype, {}, "cpu_library")
    benches[variant] = throughput.JaxBench(config, dataset, BATCH)
    scratch = benches[variant].compiled_step.memory_analysis().temp_size_in_bytes
    print(f"{variant}: scratch {scratch / 2**20:.1f} MiB", file=sys.stderr)
  seconds = throughput.time_interleaved({v: b.step for v, b in benches.items()}, int(count),
                                        WARMUP)
  print(json.dumps({"model": model, "dtype": dtype, "order": order.split(","),
                    "on_over_off": seconds["off"] / seconds["on"],
                    **{f"{v}_img_s": round(BATCH / s, 1) for v, s in seconds.items()},
                    "tunables": os.environ.get("GLIBC_TUNABLES")}))
