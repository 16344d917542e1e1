"""python benchmarks/results/xla_cpu_options_ab/inproc.py MODEL DTYPE BLOCKS

In-process A/B of XLA CPU compiler options on the throughput benchmark's JAX step:
each variant compiled from the same lowered step, timed in alternating blocks."""
import functools, json, pathlib, statistics, sys, time
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))  # the repository
from rir_jax import host_memory
host_memory.reuse_freed_memory()
import jax
from benchmarks import throughput
from rir_jax import data, train

VARIANTS = {
    "default": {},
    "sequential_scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": False},
    "vector_width_512": {"xla_cpu_prefer_vector_width": 512},
}
model, dtype, blocks = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = throughput.bench_config(model, 128, dtype, {}, "cpu_library")
bench = throughput.JaxBench(config, data.load_dataset("synthetic"), eval_batch=128)
trainer = bench.trainer
rep = trainer._train.input_shardings
jitted = jax.jit(functools.partial(train.train_step, cfg=trainer.cfg),
                 in_shardings=rep[0], out_shardings=trainer._train.output_shardings, donate_argnums=0)
lowered = jitted.lower(trainer.state, bench.batch)
compiled = {name: lowered.compile(compiler_options=opts) for name, opts in VARIANTS.items()}
state = trainer.state
times = {name: [] for name in VARIANTS}
for name, step in compiled.items():  # warm-up
  for _ in range(3):
    state, m = step(state, bench.batch)
jax.block_until_ready(state)
for _ in range(blocks):
  for name, step in compiled.items():
    start = time.perf_counter()
    for _ in range(5):
      state, m = step(state, bench.batch)
    jax.block_until_ready((state, m))
    times[name].append((time.perf_counter() - start) / 5 * 1e3)
base = statistics.median(times["default"])
for name, t in times.items():
  print(json.dumps({"model": model, "dtype": dtype, "variant": name, "options": VARIANTS[name],
                    "median_step_ms": statistics.median(t), "speedup_vs_default": base / statistics.median(t),
                    "blocks": blocks}))
