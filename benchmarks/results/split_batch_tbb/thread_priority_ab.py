"""A/B in one process: some of its threads at nice 0 (a) or nice N (b), alternating blocks
of 5 steps, 12 blocks each; the step as throughput.py times it (ResNet-20, the CPU library).

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 PYTHONPATH=. python benchmarks/results/split_batch_tbb/thread_priority_ab.py float32 128 10 tf_XLAEigen
  ... float32 128 -10 python    # every thread named python but the main one: TBB's workers (root)
"""
import os, sys, time, statistics, json
from rir_jax import host_memory
host_memory.reuse_freed_memory()
from benchmarks import throughput
from rir_jax import data
dtype, batch, nice, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config = throughput.bench_config("resnet", batch, dtype, {}, "cpu_library")
bench = throughput.JaxBench(config, data.load_dataset("synthetic"), eval_batch=batch)
for _ in range(20): bench.step()
def threads(prefix):
  out = []
  for tid in os.listdir("/proc/self/task"):
    try: name = open(f"/proc/self/task/{tid}/comm").read().strip()
    except OSError: continue
    if name.startswith(prefix) and int(tid) != os.getpid(): out.append(int(tid))
  return out
names = sorted({open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")})
print(names, file=sys.stderr)
tids = threads(target)
def set_nice(n):
  for t in tids: os.setpriority(os.PRIO_PROCESS, t, n)
times = {"a": [], "b": []}
for block in range(12):
  for arm in "ab":
    set_nice(0 if arm == "a" else nice)
    for _ in range(5):
      s = time.perf_counter(); bench.step(); times[arm].append(time.perf_counter() - s)
set_nice(0)
a, b = statistics.median(times["a"]), statistics.median(times["b"])
print(json.dumps({"dtype": dtype, "batch": batch, "nice": nice, "target": target, "threads": len(tids),
                  "a_ms": a * 1e3, "b_ms": b * 1e3, "b_speedup": a / b}))
