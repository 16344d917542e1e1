"""Where a CPU training step spends its time: a jax.profiler trace, summed by operation.

  python -m benchmarks.profile_step                     # resnet, float32, batch 128, oneDNN
  python -m benchmarks.profile_step --model=rir --dtype=bfloat16 --kernels=xla

After warm-up, traces `--steps` steps of the step that benchmarks/throughput.py times,
then sums the time XLA's CPU runtime spent in each operation of the step: the convolutions
(oneDNN's FFI calls by pass, or XLA's own), its fusions by kind (the instruction name
without its number: 'add_maximum_fusion' is every fusion XLA named so), and the rest.
A fusion that XLA splits over several threads shows as one event on the thread that
started it, so its time is wall time, not CPU time. The summary also times as many
untraced steps: wall time, the cores they kept busy (process CPU time over wall time;
threads that spin while waiting count as busy), the share of that CPU time spent in
the kernel, and the minor page faults per step (memory mapped in afresh each step: see
rir_jax/host_memory.py, and --system_malloc to see them), and the peak resident memory.
Prints one JSON object per operation kind, then the summary.
CPU only: other backends trace on the device, not in these threads.
"""
from __future__ import annotations

from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import argparse
import collections
import json
import pathlib
import re
import resource
import sys
import tempfile
import time

import jax

from benchmarks import throughput
from rir_jax import data
from rir_jax.kernels import select

# XLA's CPU runtime runs a step's operations on its intra-op pool, and the first of
# them on the client thread that starts the execution: threads so named.
RUNTIME_THREADS = ("tf_XLAEigen", "tf_XLAPjRtCpuClient")
# Bookkeeping events of that runtime, not operations of the step.
NOT_AN_OPERATION = re.compile(r"^(ThunkExecutor|ThreadpoolListener|SlinkyThreadPool|end: )")
# Compiles, then lets the heap settle: with freed memory kept, a step still faults in a
# fresh scratch now and then in the first ~20 steps, when a long-lived allocation has
# landed in the freed one and the heap grows past it.
WARMUP_STEPS = 30
# Annotates the traced steps that are summed, on the thread that runs them.
STEP_MARK = "rir_jax_profiled_step"
FFI_CALLS = {"RirOnednnConvForward": "onednn convolution: forward",
             "RirOnednnConvBackwardData": "onednn convolution: input gradient",
             "RirOnednnConvBackwardWeights": "onednn convolution: weight gradient",
             "RirBatchNormStats": "batch norm kernel: sums of x and x^2",
             "RirBatchNormGradSums": "batch norm kernel: sums of g and g*x"}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="resnet", help="resnet, rir, rir_paper, cnn")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--kernels", "--conv_impl", default="cpu_library",
                 choices=["xla", "cpu_library", *select.OLD_NAMES])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=5,
                 help="steps timed untraced, then summed from the trace")
  p.add_argument("--trace_dir", type=pathlib.Path, default=None,
                 help="keep the trace here (TensorBoard's profile plugin reads it)")
  p.add_argument("--system_malloc", action="store_true",
                 help="let malloc unmap freed memory (launch.py's --noreuse_host_memory; "
                      "GLIBC_TUNABLES=glibc.malloc.hugetlb=0 keeps 4 KB pages)")
  return p.parse_args(argv)


def custom_call_targets(hlo_text: str) -> dict[str, str]:
  """Instruction name -> custom-call target, from a compiled module's text."""
  pattern = re.compile(r"%?([\w.\-]+) = .*custom-call\(.*custom_call_target=\"(\w+)\"")
  return {m.group(1): m.group(2) for m in map(pattern.search, hlo_text.splitlines()) if m}


def operation_kind(name: str, targets: dict[str, str]) -> str:
  """What an event of the trace ran: a convolution pass, or an XLA op kind."""
  if name in targets:
    return FFI_CALLS.get(targets[name], f"custom call {targets[name]}")
  kind = re.sub(r"\.\d+$", "", name)
  return "xla convolution" if kind.startswith("convolution") else kind


def runtime_events(trace_dir: pathlib.Path) -> tuple[list, list[tuple[int, int]]]:
  """(start ns, end ns, thread, name) of every operation the runtime's threads ran
  while a STEP_MARK annotation was open, and those annotations' (start ns, end ns)."""
  (path,) = trace_dir.glob("**/*.xplane.pb")
  lines = [line for plane in jax.profiler.ProfileData.from_file(str(path)).planes
           for line in plane.lines]
  steps = [(event.start_ns, event.start_ns + event.duration_ns)
           for line in lines for event in line.events if event.name == STEP_MARK]
  events = [(event.start_ns, event.start_ns + event.duration_ns, line.name, event.name)
            for line in lines if line.name.startswith(RUNTIME_THREADS)
            for event in line.events if not NOT_AN_OPERATION.match(event.name)
            and any(start <= event.start_ns < end for start, end in steps)]
  return events, steps


def summarize(events, targets: dict[str, str], steps: list[tuple[int, int]]
              ) -> tuple[list[dict], dict]:
  per_kind = collections.defaultdict(lambda: [0, 0])  # kind -> [ns, count]
  for start, end, _, name in events:
    entry = per_kind[operation_kind(name, targets)]
    entry[0] += end - start
    entry[1] += 1
  step_ns = sum(end - start for start, end in steps) / len(steps)
  rows = [{"operation": kind, "ms_per_step": ns / len(steps) / 1e6,
           "calls_per_step": count / len(steps), "share_of_step": ns / len(steps) / step_ns}
          for kind, (ns, count) in sorted(per_kind.items(), key=lambda kv: -kv[1][0])]
  summary = {"step_ms": step_ns / 1e6,
             "threads": len({thread for _, _, thread, _ in events})}
  return rows, summary


def untraced_costs(bench, steps: int) -> dict:
  """Wall time, cores kept busy, kernel share and page faults of untraced steps, and the
  process's peak resident memory so far."""
  before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  for _ in range(steps):
    bench.step()
  after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
  user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
  return {"untraced_step_ms": wall / steps * 1e3,
          "cores_busy": (user + system) / wall,
          "kernel_share_of_cpu_time": system / max(user + system, 1e-9),
          "minor_page_faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
          "peak_resident_mb": after.ru_maxrss / 1024}  # Linux counts it in KB


def main(argv=None) -> int:
  args = parse_args(argv)
  if not args.system_malloc:
    host_memory.reuse_freed_memory()  # as launch.py does
  if jax.default_backend() != "cpu":
    print(f"error: profiles the CPU runtime; this backend is {jax.default_backend()}",
          file=sys.stderr)
    return 2
  args.kernels = select.canonical(args.kernels)
  if args.kernels == "cpu_library" and not select.cpu_library_usable()[0]:
    print(f"error: the CPU library cannot run here: {select.cpu_library_usable()[1]}",
          file=sys.stderr)
    return 2
  dataset = data.load_dataset("synthetic")
  config = throughput.bench_config(args.model, args.batch, args.dtype, {}, args.kernels)
  bench = throughput.JaxBench(config, dataset, eval_batch=args.batch)
  for _ in range(WARMUP_STEPS):
    bench.step()
  costs = untraced_costs(bench, args.steps)
  with tempfile.TemporaryDirectory() as scratch:
    trace_dir = args.trace_dir or pathlib.Path(scratch)
    with jax.profiler.trace(str(trace_dir)):
      bench.step()  # the trace misses the start of the first step after it starts
      for _ in range(args.steps):
        with jax.profiler.TraceAnnotation(STEP_MARK):
          bench.step()
    events, steps = runtime_events(trace_dir)
  targets = custom_call_targets(bench.compiled_step.as_text())
  rows, summary = summarize(events, targets, steps)
  for row in rows:
    print(json.dumps(row))
  # Above 1, the trace itself slowed the steps it saw: its own long-lived allocations
  # can land in the freed scratch and make the heap grow, i.e. fault, again.
  traced_over_untraced = summary["step_ms"] / costs["untraced_step_ms"]
  print(json.dumps({"model": args.model, "dtype": args.dtype, "kernels": args.kernels,
                    "batch": args.batch, "steps": args.steps, **summary, **costs,
                    "traced_over_untraced": traced_over_untraced}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
