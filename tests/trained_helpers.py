"""A small trained MNIST run shared by the tests of what uses it (evaluate, predict, export).

60 steps of a 2-conv CNN with 1,000 validation examples and an eval every 20 steps:
~25 s on 2 cores, trained once per test session and reused by every module that asks.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from rir_jax import metrics

REPO = pathlib.Path(__file__).resolve().parent.parent
MNIST_TINY = [
    "--config=configs/mnist.py:model=cnn,smoke", "--config.num_train_steps=60",
    "--config.model.widths=(8, 16)", "--config.model.convs_per_stage=1",
    "--config.eval_every_steps=20", "--config.checkpoint_every_steps=20",
    "--config.data.validation_examples=1000",
]


def mnist_flags(shared_data: pathlib.Path) -> list[str]:
  return [*MNIST_TINY, f"--config.data.manual_dir={shared_data / 'mnist'}"]


def train(workdir: pathlib.Path, shared_data: pathlib.Path, *extra: str) -> pathlib.Path:
  result = subprocess.run(
      [sys.executable, str(REPO / "launch.py"), f"--workdir={workdir}", "--jax_cache_dir=",
       *mnist_flags(shared_data), *extra], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def shared_run(tmp_path_factory, shared_data: pathlib.Path) -> pathlib.Path:
  """The session's trained run (made by the first module that asks)."""
  workdir = tmp_path_factory.getbasetemp() / "trained_mnist"
  done = workdir / "model.json"
  if not (done.exists() and (workdir / "checkpoints" / "60").exists()):
    train(workdir, shared_data)
  return workdir


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
  """`python -m rir_jax.MODULE ARGS` from the repository root."""
  return subprocess.run([sys.executable, "-m", f"rir_jax.{module}", *map(str, args)], cwd=REPO,
                        env=dict(os.environ), capture_output=True, text=True, timeout=300)


def eval_lines(workdir: pathlib.Path) -> list[dict]:
  return [line for line in metrics.read_metrics(workdir / "metrics.jsonl")
          if "val/accuracy" in line or "eval/accuracy" in line]


def assert_one_line_exit_2(result: subprocess.CompletedProcess, phrase: str) -> None:
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
  assert phrase in lines[0], lines[0]
