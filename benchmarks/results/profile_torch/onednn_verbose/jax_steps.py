"""Runs the JAX step (ResNet-20, batch 128, the CPU kernel library) STEPS times after
warm-up, between two marks, so that ONEDNN_VERBOSE=1's lines of those steps can be summed:

  ONEDNN_VERBOSE=1 python benchmarks/results/profile_torch/onednn_verbose/jax_steps.py bfloat16 10 > jax.txt
  python benchmarks/results/profile_torch/onednn_verbose/parse.py jax.txt 10
"""
import pathlib, sys, time
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))  # the repository
from rir_jax import host_memory
host_memory.reuse_freed_memory()  # as launch.py and throughput.py do
from benchmarks import throughput
from rir_jax import data

dtype, steps = sys.argv[1], int(sys.argv[2])
config = throughput.bench_config("resnet", 128, dtype, {}, "cpu_library")
bench = throughput.JaxBench(config, data.load_dataset("synthetic"), eval_batch=128)
for _ in range(8):
  bench.step()
print("MARK_START", flush=True)
start = time.perf_counter()
for _ in range(steps):
  bench.step()  # waits for the step
print("STEP_MS", (time.perf_counter() - start) / steps * 1e3, flush=True)
print("MARK_END", flush=True)
