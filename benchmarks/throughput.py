"""Training-step throughput of rir-jax against a PyTorch replica of the same model.

  python -m benchmarks.throughput                       # resnet,rir; float32; batch 128;
                                                        # XLA and oneDNN convolutions;
                                                        # PyTorch eager and compiled
  python -m benchmarks.throughput --dtype=float32,bfloat16 --out=/tmp/cpu.jsonl
  python -m benchmarks.throughput --torch_modes=eager   # no torch.compile
  python -m benchmarks.throughput --models=resnet,rir,rir_paper --batch=128,500 \
      --dtype=float32,bfloat16 --no_torch               # a GPU or TPU, JAX only

The JAX side is the project's own step (rir_jax.trainer.Trainer); the PyTorch side
(benchmarks/torch_models.py, channels_last) does the same work: crop+flip
augmentation and normalization of a uint8 batch, forward, cross-entropy, backward,
SGD with momentum 0.9 and L2 weight decay on kernels, at the same batch and dtype
(bfloat16: torch.autocast), on one device, once per --torch_modes: eager, and
through torch.compile (its compile time reported apart, as JAX's is, from scratch:
no cache of earlier compiles). All train on one synthetic CIFAR-shaped batch kept on
the device, in alternating blocks of steps, so that a noisy machine slows all alike.
Prints one JSON object per (model, dtype, batch) line; --out writes the same lines to
a file, and benchmarks/throughput_table.py makes a Markdown table of them.
"""
from __future__ import annotations

from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import argparse
import contextlib
import functools
import itertools
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
import warnings
from typing import Callable, Sequence
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections

from benchmarks.throughput_table import TORCH_MODES
from configs import default
from rir_jax import data, loop, parallel, train, trainer
from rir_jax.data import feeding
from rir_jax.kernels import build, select
from rir_jax.models import count_params

try:
  import torch

  from benchmarks import torch_models
except ImportError:  # JAX-only machines: torch is an optional benchmark dependency
  torch = None

BLOCK = 5        # steps per framework per turn: short, so slow drifts hit both alike
EVAL_REPS = 5
PEAK_REPS = 10


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet,rir", help="comma list: resnet, rir, rir_paper")
  p.add_argument("--batch", default="128", help="comma list of batch sizes")
  p.add_argument("--dtype", default="float32", help="comma list: float32, bfloat16")
  p.add_argument("--kernels", "--conv_impl", default="xla,cpu_library",
                 help="comma list: xla, cpu_library (CPU only; skipped where it cannot run)")
  p.add_argument("--steps", type=int, default=20, help="timed steps per framework")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
  p.add_argument("--eval_batch", type=int, default=1000, help="forward-only batch size")
  p.add_argument("--out", type=pathlib.Path, default=None, help="also write the lines here")
  p.add_argument("--torch_modes", default=None,
                 help="comma list: eager, compile (default: both, where torch is installed)")
  p.add_argument("--no_torch", action="store_true", help="JAX only, even if torch is there")
  p.add_argument("--system_malloc", action="store_true",
                 help="let malloc unmap freed memory (launch.py's --noreuse_host_memory; "
                      "GLIBC_TUNABLES=glibc.malloc.hugetlb=0 keeps 4 KB pages)")
  args = p.parse_args(argv)
  for dtype in args.dtype.split(","):
    if dtype not in trainer.DTYPES:
      p.error(f"unknown dtype {dtype!r}; choose from {', '.join(trainer.DTYPES)}")
  args.kernels = ",".join(select.OLD_NAMES.get(k, k) for k in args.kernels.split(","))
  for kernels in args.kernels.split(","):
    if kernels not in ("xla", "cpu_library"):
      p.error(f"unknown kernels {kernels!r}; choose from xla, cpu_library")
  for mode in (args.torch_modes or "eager").split(","):
    if mode not in TORCH_MODES:
      p.error(f"unknown torch mode {mode!r}; choose from {', '.join(TORCH_MODES)}")
  return args


def timed(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def matmul_peak_gflops(dtype: str) -> float:
  """Best GFLOP/s of a square jnp.dot: the yardstick for the fraction of peak."""
  n = 2048 if jax.default_backend() == "cpu" else 16384  # ~0.2 s on 2 CPU cores
  # Random data: zeros or ones let a GPU clock higher than real work does.
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), trainer.DTYPES[dtype])
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(a, a))
  best = min(timed(lambda: jax.block_until_ready(dot(a, a))) for _ in range(PEAK_REPS))
  return 2 * n**3 / best / 1e9


def _flops(cost) -> float:
  """The 'flops' of a cost_analysis(), which is a dict or a list of them."""
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float((cost or {}).get("flops") or 0.0)


def step_flops(compiled: jax.stages.Compiled, step: Callable, *args) -> tuple[float, str]:
  """FLOPs of one step, and which XLA cost analysis counted them.

  The compiled step's count, unless it misses work: the GPU backend counts its
  convolutions (cuDNN calls) as nothing, and so does any backend oneDNN's FFI
  calls. Then the count of `step(*args)` (on XLA's convolutions) lowered, not
  compiled, for the CPU stands in; on a CPU the two agree within 1%.
  """
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), args)
  compiled_flops = _flops(compiled.cost_analysis())
  cpu_flops = _flops(jax.jit(step).lower(*shapes).cost_analysis())
  if compiled_flops >= 0.5 * cpu_flops:
    return compiled_flops, "compiled"
  return cpu_flops, "lowered_for_cpu"


def bench_config(model: str, batch: int, dtype: str, model_kwargs: dict,
                 kernels: str = "xla") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = ml_collections.ConfigDict({"name": model, **model_kwargs})
  config.data.name = "synthetic"
  config.batch_size = batch
  config.dtype = dtype
  config.kernels = kernels
  config.schedule.name = "constant"  # as the PyTorch side's fixed learning rate
  return config


class JaxBench:
  """The project's Trainer on one device, fed one batch that stays on the device."""

  def __init__(self, config: ml_collections.ConfigDict, dataset: data.Dataset,
               eval_batch: int):
    plan = loop.make_plan(config, len(dataset.train_labels))
    mesh = parallel.make_mesh(jax.devices()[:1])
    self.trainer = trainer.Trainer(config, dataset, plan, mesh=mesh)
    n = config.batch_size
    self.batch = parallel.global_batch_from_local(
        {"image": dataset.train_images[:n], "label": dataset.train_labels[:n]}, mesh)
    self._host_batch = functools.partial(
        feeding.train_batch, dataset.train_images, dataset.train_labels, global_batch=n,
        seed=config.seed, mesh=mesh)
    self._fed_steps = 0
    # From the train split: the synthetic test split may be smaller than one batch.
    self.eval_batch = min(eval_batch, len(dataset.train_labels))
    self.eval_batches = feeding.eval_batches(
        dataset.train_images[:self.eval_batch], dataset.train_labels[:self.eval_batch],
        global_batch=self.eval_batch, mesh=mesh)
    self.compiled_step = self.trainer.compile(self.batch)
    self.compile_seconds = self.trainer.compile_seconds
    # XLA's cost analysis sees nothing inside oneDNN's convolutions: the same step on
    # XLA's convolutions, lowered, counts them.
    on_xla = config.copy_and_resolve_references()
    on_xla.kernels = "xla"
    xla_step = functools.partial(train.train_step,
                                 cfg=trainer.make_step_config(on_xla, dataset, plan))
    self.flops, self.flops_source = step_flops(
        self.compiled_step, xla_step, self.trainer.state, self.batch)
    self.params = count_params(self.trainer.state.params)

  def step(self) -> dict:
    step_metrics = self.trainer.step(self.batch)
    return jax.block_until_ready((self.trainer.state, step_metrics))[1]

  def fed_step(self) -> dict:
    """A step whose batch first goes through the training input pipeline (gather, transfer).

    Without the training loop's prefetching, so the difference to `step` bounds what
    the input pipeline can cost a step from above.
    """
    batch = self._host_batch(step=self._fed_steps)
    self._fed_steps += 1
    step_metrics = self.trainer.step(batch)
    return jax.block_until_ready((self.trainer.state, step_metrics))[1]

  def eval_images_per_sec(self) -> float:
    """Forward-only throughput; evaluate() fetches its totals, so it waits for the device."""
    self.trainer.evaluate(self.eval_batches)  # compiles
    seconds = [timed(lambda: self.trainer.evaluate(self.eval_batches))
               for _ in range(EVAL_REPS)]
    return self.eval_batch / statistics.median(seconds)


def torch_device() -> str | None:
  """The PyTorch device on a par with JAX's, or None (no torch, or a TPU, say)."""
  if torch is None:
    return None
  if jax.default_backend() == "cpu":
    return "cpu"
  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else None


def torch_modes(args: argparse.Namespace) -> list[str]:
  """The PyTorch modes to time: --torch_modes, by default all where PyTorch can run.

  Raises ValueError where modes were asked for that cannot run here.
  """
  if args.no_torch:
    return []
  if torch_device() is not None:
    return (args.torch_modes or ",".join(TORCH_MODES)).split(",")
  missing = ("PyTorch is not installed (pip install torch==2.13.0)" if torch is None
             else f"no PyTorch device for JAX's {jax.default_backend()}")
  if args.torch_modes:
    raise ValueError(f"--torch_modes={args.torch_modes}: {missing}")
  print(f"{missing}: measuring JAX only", file=sys.stderr)
  return []


@contextlib.contextmanager
def compiling_from_scratch():
  """torch.compile without its caches, so that each compile time is a first compile's,
  as JAX's is here; what it writes goes to a folder removed afterwards."""
  with tempfile.TemporaryDirectory() as scratch, \
       mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": scratch}), \
       torch.compiler.config.patch(force_disable_caches=True), warnings.catch_warnings():
    warnings.filterwarnings("ignore", "dynamo_pgo force disabled")  # it repeats what this asks
    yield


def _cpu_seconds() -> tuple[float, float] | None:
  """(CPU seconds used by every process on the host, by this one), or None off Linux."""
  try:
    with open("/proc/stat") as stat:
      user, nice, system, _, _, irq, softirq = map(int, stat.readline().split()[1:8])
  except OSError:
    return None
  own = os.times()
  return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def watching_host(fn: Callable[[], object]) -> tuple[object, float | None]:
  """fn(), and the share of the host's CPUs that other processes used meanwhile.

  A busy neighbour slows CPU rows, PyTorch's (OpenMP) far more than JAX's.
  """
  start, before = time.perf_counter(), _cpu_seconds()
  result = fn()
  wall, after = time.perf_counter() - start, _cpu_seconds()
  if before is None or after is None:
    return result, None
  others = (after[0] - before[0]) - (after[1] - before[1])
  return result, max(others / (wall * os.cpu_count()), 0.0)


def time_interleaved(steps: dict[str, Callable[[], object]], count: int,
                     warmup: int) -> dict[str, float]:
  """Median seconds per step of each `steps` entry, run in alternating blocks."""
  for step in steps.values():
    for _ in range(warmup):
      step()
  seconds = {name: [] for name in steps}
  order = list(steps)
  while min(map(len, seconds.values())) < count:
    for name in order:
      for _ in range(min(BLOCK, count - len(seconds[name]))):
        seconds[name].append(timed(steps[name]))
    order.reverse()  # neither framework always runs right after the other
  return {name: statistics.median(s) for name, s in seconds.items()}


def torch_steps(config: ml_collections.ConfigDict, dataset: data.Dataset, modes: list[str],
                params: int) -> tuple[dict[str, Callable[[], object]], float | None]:
  """({mode: a step of the PyTorch replica in that mode}, torch.compile's seconds or None)."""
  steps, compile_seconds = {}, None
  for mode in modes:
    replica = torch_models.TrainStep(config, dataset, torch_device(),
                                     compiled=mode == "compile")
    if replica.params != params:
      raise AssertionError(f"{config.model.name}: PyTorch replica has {replica.params} "
                           f"parameters, the flax model {params}")
    if mode == "compile":
      compile_seconds = replica.compile()
    steps[mode] = replica.step
  return steps, compile_seconds


def torch_columns(modes: list[str], seconds: dict[str, float], batch: int,
                  compile_seconds: float | None) -> dict:
  """The result line's PyTorch fields: per mode, its img/s and JAX's over it."""
  columns = {"torch_modes": modes, "torch_compile_seconds": compile_seconds,
             "torch_version": torch.__version__ if modes else None}
  for mode in TORCH_MODES:
    speed = batch / seconds[f"torch_{mode}"] if mode in modes else None
    columns[f"torch_{mode}_images_per_sec"] = speed
    columns[f"jax_over_torch_{mode}"] = batch / seconds["jax"] / speed if speed else None
  return columns


def measure(model: str, batch: int, dtype: str, *, dataset: data.Dataset, steps: int,
            warmup: int, peak_gflops: float, peak_dtype: str, torch_modes: Sequence[str] = (),
            eval_batch: int = 1000, model_kwargs: dict | None = None,
            kernels: str = "xla") -> dict:
  """One result line: JAX (and PyTorch's) training throughput of `model`, and more."""
  config = bench_config(model, batch, dtype, model_kwargs or {}, kernels)
  jax_bench = JaxBench(config, dataset, eval_batch)
  benches = {"jax": jax_bench.step, "jax_fed": jax_bench.fed_step}
  torch_modes = list(torch_modes)
  replicas, torch_compile_seconds = torch_steps(config, dataset, torch_modes, jax_bench.params)
  benches.update({f"torch_{mode}": step for mode, step in replicas.items()})
  seconds, others = watching_host(lambda: time_interleaved(benches, steps, warmup))
  jax_speed = batch / seconds["jax"]
  gflops = jax_bench.flops / seconds["jax"] / 1e9
  return {
      "model": model, "batch": batch, "dtype": dtype, "kernels": kernels,
      "params": jax_bench.params, "jax_images_per_sec": jax_speed,
      **torch_columns(torch_modes, seconds, batch, torch_compile_seconds),
      "train_flops_per_step": jax_bench.flops, "flops_source": jax_bench.flops_source,
      "jax_gflops_per_sec": gflops, "peak_gflops_per_sec": peak_gflops,
      "peak_dtype": peak_dtype, "fraction_of_peak": gflops / peak_gflops,
      "input_pipeline_share": 1 - seconds["jax"] / seconds["jax_fed"],
      "jax_compile_seconds": jax_bench.compile_seconds,
      "eval_batch": jax_bench.eval_batch, "eval_images_per_sec": jax_bench.eval_images_per_sec(),
      "steps": steps, "device_kind": jax.devices()[0].device_kind,
      "host_cpus": os.cpu_count(), "host_cpu_simd": host_cpu_simd(),
      "host_cpu_used_by_others": others,
      "backend": jax.default_backend(), "jax_version": jax.__version__,
  }


def host_cpu_simd() -> str:
  """The host CPU's widest vector instructions that decide the CPU rows' speed (Linux):
  amx_bf16, avx512_bf16 (bf16 dot products), avx512f, avx2, or "other"."""
  flags = build.cpu_flags()
  return next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags), "other")


def main(argv=None) -> int:
  args = parse_args(argv)
  if not args.system_malloc:
    host_memory.reuse_freed_memory()  # as launch.py does; the PyTorch side shares it
  try:
    modes = torch_modes(args)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  dataset = data.load_dataset("synthetic")
  peaks = {}
  choices = args.kernels.split(",")
  if "cpu_library" in choices and not select.cpu_library_usable()[0]:
    print(f"no CPU library rows: {select.cpu_library_usable()[1]}", file=sys.stderr)
    choices.remove("cpu_library")
  rows = itertools.product(args.models.split(","), args.dtype.split(","),
                           map(int, args.batch.split(",")), choices)
  scratch = compiling_from_scratch() if "compile" in modes else contextlib.nullcontext()
  with scratch, args.out.open("w") if args.out else contextlib.nullcontext() as out:
    for model, dtype, batch, kernels in rows:
      # On a CPU each dtype has its own peak; accelerators are judged by bf16 (MFU).
      # Measured before every row, the best so far: a busy moment of a shared
      # machine should not set the yardstick.
      peak_dtype = dtype if jax.default_backend() == "cpu" else "bfloat16"
      peaks[peak_dtype] = max(peaks.get(peak_dtype, 0.0), matmul_peak_gflops(peak_dtype))
      line = json.dumps(measure(model, batch, dtype, dataset=dataset, steps=args.steps,
                                warmup=args.warmup, torch_modes=modes,
                                eval_batch=args.eval_batch, peak_gflops=peaks[peak_dtype],
                                peak_dtype=peak_dtype, kernels=kernels))
      print(line, flush=True)
      if out:
        out.write(line + "\n")
        out.flush()
  return 0


if __name__ == "__main__":
  sys.exit(main())
