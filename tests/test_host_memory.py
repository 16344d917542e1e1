"""rir_jax.host_memory: a training step's scratch stops costing page faults."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from rir_jax import host_memory

REPO = pathlib.Path(__file__).resolve().parent.parent

# Times nothing: counts the minor page faults of the project's own training step
# (ResNet-8, batch 64: its scratch is over glibc's 32 MB mmap ceiling) after warm-up:
# the median of 5 steps.
FAULTS_PER_STEP = """
import json, resource, sys
from rir_jax import host_memory
applied = host_memory.reuse_freed_memory() if sys.argv[1] == "reuse" else False
from benchmarks import throughput
from rir_jax import data
config = throughput.bench_config("resnet", 64, "float32", {"depth": 8}, "xla")
bench = throughput.JaxBench(config, data.load_dataset("synthetic"), eval_batch=64)
# Compiles, then lets the heap settle: in the first ~20 steps a long-lived allocation
# can land in freed scratch and the heap grow past it (benchmarks/PERFORMANCE.md,
# section 4; 8 steps once left 254 faults per step); the median below skips a straggler.
for _ in range(24):
  bench.step()
faults = []
for _ in range(5):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  bench.step()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults_per_step": sorted(faults)[2]}))  # median
"""


def faults_per_step(mode: str) -> dict:
  out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], check=True, cwd=REPO,
                       capture_output=True, text=True).stdout
  return json.loads(out.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_reuse_removes_the_page_faults_of_each_step():
  system, reuse = faults_per_step("system"), faults_per_step("reuse")
  assert reuse["applied"]
  # Without it, every step maps its scratch anew: thousands of 4 KB pages (~15,000 here).
  assert system["faults_per_step"] > 5000, system
  assert reuse["faults_per_step"] < 100, reuse


def test_reuse_is_a_no_op_off_linux(monkeypatch):
  monkeypatch.setattr(host_memory.sys, "platform", "darwin")
  assert host_memory.reuse_freed_memory() is False


# Restarts with huge pages, then reports the flags of the heap mapping that holds the middle
# of a fresh 64 MB block ('hg': the kernel was asked for transparent huge pages there;
# glibc asks from the heap's first 2 MB boundary on).
HEAP_FLAGS = """
import ctypes, json, os, re
from rir_jax import host_memory
host_memory.restart_with_huge_pages()
host_memory.reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(64 << 20)
ctypes.memset(block, 1, 64 << 20)
for mapping in re.split(r"\\n(?=[0-9a-f]+-[0-9a-f]+ )", open("/proc/self/smaps").read()):
  start, end = (int(a, 16) for a in mapping.split()[0].split("-"))
  if start <= block + (32 << 20) < end:
    flags = re.search(r"VmFlags:(.*)", mapping).group(1).split()
print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES"), "flags": flags}))
"""

THP_MADVISE = (host_memory._thp_mode() == "madvise"
               and (host_memory._glibc_version() or (0, 0)) >= host_memory.HUGE_PAGES_SINCE)


def heap_flags(tmp_path, environment: dict) -> dict:
  """HEAP_FLAGS run as `python -m`, as the benchmarks are: the restart keeps the -m."""
  (tmp_path / "heap_flags.py").write_text(HEAP_FLAGS)
  env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
  env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", **environment)
  out = subprocess.run([sys.executable, "-m", "heap_flags"], check=True, cwd=tmp_path,
                       env=env, capture_output=True, text=True).stdout
  return json.loads(out)


@pytest.mark.skipif(not THP_MADVISE, reason="needs glibc >= 2.35 and THP in madvise mode")
def test_restart_puts_the_heap_on_huge_pages(tmp_path):
  restarted = heap_flags(tmp_path, {})
  assert restarted["tunables"] == "glibc.malloc.hugetlb=1" and "hg" in restarted["flags"]
  kept = heap_flags(tmp_path, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})  # the user's no
  assert kept["tunables"] == "glibc.malloc.hugetlb=0" and "hg" not in kept["flags"]


def test_huge_pages_environment_adds_the_tunable_only_where_it_changes_something():
  new = host_memory.huge_pages_environment
  glibc = host_memory.HUGE_PAGES_SINCE
  assert new({"A": "1"}, "madvise", glibc) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  assert new({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}, "madvise", (2, 40)) == {
      "GLIBC_TUNABLES": "glibc.malloc.arena_max=1:glibc.malloc.hugetlb=1"}
  for environ, thp_mode, version in [
      ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", glibc),  # the user's choice
      ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "madvise", glibc),  # restarted already
      ({}, "always", glibc), ({}, "never", glibc), ({}, None, glibc),
      ({}, "madvise", (2, 34)), ({}, "madvise", None)]:
    assert new(environ, thp_mode, version) is None, (environ, thp_mode, version)
