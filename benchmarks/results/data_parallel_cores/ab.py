"""One fake device per core (data parallel over the CPU's two cores) against one device.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python -m benchmarks.results.data_parallel_cores.ab resnet float32 500 12 [TBB_THREADS]

Both steps are throughput.py's, compiled in one process with two host devices: over the
first device alone, and over both with the batch split between them (batch norm's
statistics then all-reduced across the two). Timed in alternating blocks. TBB_THREADS, if
given, caps oneDNN's TBB runtime while the two-device step runs (1: each device's
convolutions on its own thread alone); it needs TBB's headers
(`pip download tbb-devel==2021.13.1 --no-deps`, unzipped; TBB_INCLUDE=its include folder).
Prints one JSON line: images/s of each and the two-device step's speed over one.
"""
from __future__ import annotations

import ctypes
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import jax

from benchmarks import throughput
from rir_jax import data, host_memory, parallel

WARMUP = 5


def tbb_limiter(threads: int | None):
  """A function that sets TBB's process-wide cap, built from tbb_limit.cc; None: no cap."""
  if threads is None:
    return lambda n: None
  library = pathlib.Path(tempfile.mkdtemp()) / "libtbb_limit.so"
  lib_dir = pathlib.Path(sys.prefix, "lib")
  subprocess.run(["g++", "-O2", "-shared", "-fPIC", f"-I{os.environ['TBB_INCLUDE']}",
                  str(pathlib.Path(__file__).with_name("tbb_limit.cc")), f"-L{lib_dir}",
                  "-l:libtbb.so.12", f"-Wl,-rpath,{lib_dir}", "-o", str(library)], check=True)
  return ctypes.CDLL(str(library)).tbb_limit


def main(model: str, dtype: str, batch: str, count: str, tbb_threads: str | None = None):
  host_memory.reuse_freed_memory()
  dataset = data.load_dataset("synthetic")
  limit = tbb_limiter(None if tbb_threads is None else int(tbb_threads))
  make_mesh, benches = parallel.make_mesh, {}
  for devices in (1, 2):
    parallel.make_mesh = lambda _, n=devices: make_mesh(jax.devices()[:n])
    config = throughput.bench_config(model, int(batch), dtype, {}, "cpu_library")
    benches[devices] = throughput.JaxBench(config, dataset, int(batch))
  parallel.make_mesh = make_mesh
  caps = {1: os.cpu_count(), 2: int(tbb_threads or os.cpu_count())}

  def capped(devices):
    def step():
      limit(caps[devices])
      return benches[devices].step()
    return step

  seconds = throughput.time_interleaved({n: capped(n) for n in benches}, int(count), WARMUP)
  print(json.dumps({"model": model, "dtype": dtype, "batch": int(batch),
                    "tbb_threads_two_devices": caps[2],
                    **{f"devices{n}_img_s": round(int(batch) / s, 1) for n, s in seconds.items()},
                    "two_over_one": seconds[1] / seconds[2]}))


if __name__ == "__main__":
  main(*sys.argv[1:])
