"""rir_jax.host_memory: a training step's scratch stops costing page faults."""
import json
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
