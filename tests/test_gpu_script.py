"""benchmarks/gpu_check.sh without a GPU: which commands each stage runs, and that every one
of them passes its benchmark's own argument parser (so the script cannot drift from the
flags). `SMOKE=1 bash benchmarks/gpu_check.sh OUT paper,dispatch,speed` runs it for real, in
about 3 minutes on this CPU (benchmarks/PERFORMANCE.md section 8)."""
import importlib
import os
import subprocess

import pytest

from launch_helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
FAKE_PYTHON = "#!/bin/bash\nprintf '%s\\x1f' \"$@\" >> \"$RECORD\"\necho >> \"$RECORD\"\n"


def recorded_commands(tmp_path, stages, **env):
  """Runs the script with a `python3` that records its arguments; returns them per call."""
  fake = tmp_path / "bin"
  fake.mkdir()
  (fake / "python3").write_text(FAKE_PYTHON)
  (fake / "python3").chmod(0o755)
  record = tmp_path / "record"
  result = subprocess.run(
      ["bash", str(SCRIPT), str(tmp_path / "out"), stages], capture_output=True, text=True,
      env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "RECORD": str(record), **env})
  assert result.returncode == 0, result.stderr
  calls = [line.split("\x1f")[:-1] for line in record.read_text().splitlines()]
  return [call[1:] for call in calls if call[:1] == ["-m"] and
          call[1].startswith("benchmarks.")]


@pytest.mark.parametrize("smoke", ["0", "1"])
def test_each_stage_runs_its_benchmark_with_flags_it_accepts(tmp_path, smoke):
  commands = recorded_commands(tmp_path, "paper,dispatch,speed", SMOKE=smoke)
  modules = [command[0] for command in commands]
  assert modules == ["benchmarks.paper", "benchmarks.dispatch_ab", "benchmarks.throughput"]
  for module, *flags in commands:
    args = importlib.import_module(module).parse_args(flags)
    assert str(args.out).startswith(str(tmp_path / "out"))
  paper = importlib.import_module("benchmarks.paper").parse_args(commands[0][1:])
  assert paper.rows == ["rir"] and paper.scale == "paper" and paper.smoke == (smoke == "1")
  if smoke == "0":
    assert paper.dataset == "cifar10_jpeg" and paper.manual_dir == ".gpu_data/cifar10_jpeg"


def test_only_the_stages_asked_for_run(tmp_path):
  commands = recorded_commands(tmp_path, "speed")
  assert [command[0] for command in commands] == ["benchmarks.throughput"]


def test_without_stages_it_says_how_to_call_it():
  result = subprocess.run(["bash", str(SCRIPT), "/tmp/unused"], capture_output=True, text=True)
  assert result.returncode != 0 and "usage: gpu_check.sh OUT" in result.stderr
