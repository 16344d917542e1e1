"""SIGTERM (preemption) and SIGINT (Ctrl-C): stop at a step boundary with a checkpoint of
that step, one line, exit 143 / 130; the same command then ends where an uninterrupted
run ends, bit for bit. Two processes save the same step whichever of them is signalled.
Ctrl-C in evaluate, predict or export: one line, exit 130.
"""
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from launch_helpers import (REPO, free_port, launch_command, max_abs_difference,
                            read_checkpoint, result_lines, start)
from rir_jax import metrics
from rir_jax.kernels import select

STEPS = "--config.num_train_steps=24"
# Checkpoints every 5 steps: a stop mostly lands between two of them.
SPARSE_CHECKPOINTS = "--config.checkpoint_every_steps=5"


def _last_step(workdir) -> int:
  try:
    return max(line["step"] for line in metrics.read_metrics(workdir / "metrics.jsonl"))
  except (FileNotFoundError, ValueError):
    return -1


def _wait_for_step(workdir, step, procs, limit_s=240):
  deadline = time.monotonic() + limit_s
  while _last_step(workdir) < step:
    assert all(p.poll() is None for p in procs), "a process ended before the signal"
    assert time.monotonic() < deadline, "no progress"
    time.sleep(0.02)


def _saved_steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())


def _assert_bit_identical(workdir, reference, step=24):
  a, b = read_checkpoint(workdir, step), read_checkpoint(reference, step)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  assert result_lines(workdir)[1] == result_lines(reference)[1]  # every eval line


# --- one process ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference") / "run"
  result = subprocess.run(launch_command(tiny, workdir, STEPS, SPARSE_CHECKPOINTS),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                          (signal.SIGHUP, 129)])
def test_a_signal_stops_at_a_step_with_its_checkpoint_and_the_rerun_is_bit_identical(
    tiny, reference, tmp_path, signum, code):
  workdir = tmp_path / "run"
  command = launch_command(tiny, workdir, STEPS, SPARSE_CHECKPOINTS)
  if signum == signal.SIGHUP:  # as a terminal's command has it, even if pytest runs under
    command = ["env", "--default-signal=HUP", *command]  # nohup (its children ignore it)
  proc = start(command, tmp_path / "first.log")
  _wait_for_step(workdir, 6, [proc])
  os.kill(proc.pid, signum)
  assert proc.wait(timeout=120) == code, (tmp_path / "first.log").read_text()[-3000:]
  log = (tmp_path / "first.log").read_text()
  assert "Traceback" not in log, log[-3000:]
  stopped = re.findall(rf"^stopped by {signum.name} at step (\d+), its checkpoint saved", log,
                       re.MULTILINE)
  assert len(stopped) == 1, log[-3000:]
  step = int(stopped[0])
  assert 6 <= step < 24 and _saved_steps(workdir)[-1] == step
  assert _last_step(workdir) == step  # metrics flushed up to the stop

  if signum == signal.SIGINT:  # a run stopped often resumes with checkpoints more often
    command = [arg for arg in command if arg != SPARSE_CHECKPOINTS] + [
        "--config.checkpoint_every_steps=4", "--config.keep_checkpoints=2"]
  again = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"resuming at step {step}" in again.stderr
  _assert_bit_identical(workdir, reference)
  if signum == signal.SIGINT:
    assert _saved_steps(workdir)[-2:] == [20, 24]


def test_under_nohup_a_hangup_leaves_the_run_training(tiny, tmp_path):
  workdir = tmp_path / "run"
  command = ["env", "--ignore-signal=HUP",  # what nohup does
             *launch_command(tiny, workdir, STEPS, SPARSE_CHECKPOINTS)]
  proc = start(command, tmp_path / "log")
  _wait_for_step(workdir, 6, [proc])
  os.kill(proc.pid, signal.SIGHUP)
  assert proc.wait(timeout=120) == 0, (tmp_path / "log").read_text()[-3000:]
  assert _last_step(workdir) == 24


# --- two processes on loopback ---------------------------------------------------------------

TIMEOUT_S = 10
PAIR_XLA_FLAGS = (f"--xla_force_host_platform_device_count=2 "
                  f"--xla_cpu_collective_timeout_seconds={TIMEOUT_S}")


def _pair(tiny, workdir, port, *flags):
  procs = []
  for i in range(2):
    command = launch_command(tiny, workdir, STEPS, SPARSE_CHECKPOINTS, *flags,
                             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                             f"--process_id={i}", f"--distributed_timeout={TIMEOUT_S}")
    # A hard cap, as in test_multihost.py; the signal goes to python itself (`_python`).
    procs.append(start(["timeout", "-k", "5", "240", *command],
                       workdir.parent / f"{workdir.name}.p{i}.log", XLA_FLAGS=PAIR_XLA_FLAGS))
  return procs


def _python(proc) -> int:
  """The pid of the python process under `timeout`."""
  for _ in range(200):
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    if children:
      return int(children[0])
    time.sleep(0.05)
  raise AssertionError("no child under timeout")


@pytest.fixture
def pairs():
  running = []
  yield running
  for proc in running:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()


@pytest.fixture(scope="module")
def pair_reference(tiny, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("pair_reference") / "run"
  procs = _pair(tiny, workdir, free_port())
  try:
    for i, proc in enumerate(procs):
      assert proc.wait(timeout=300) == 0, (workdir.parent / f"run.p{i}.log").read_text()[-3000:]
  finally:
    for proc in procs:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("signalled,steps_per_dispatch", [((1,), 1), ((0, 1), 3)],
                         ids=["one_process", "both_3_steps_per_dispatch"])
def test_sigterm_to_a_multi_process_run_saves_the_same_step_everywhere(
    tiny, pair_reference, tmp_path, pairs, signalled, steps_per_dispatch):
  """With several steps per dispatch too: the processes agree on a dispatch boundary, and
  on the CPU kernel library the resumed run ends with the one-at-a-time reference's bits."""
  # Logs and evals sparse enough for dispatches of 3 steps between them.
  dispatch = (f"--config.steps_per_dispatch={steps_per_dispatch}", "--config.log_every_steps=6",
              "--config.eval_every_steps=12")
  workdir, port = tmp_path / "run", free_port()
  procs = _pair(tiny, workdir, port, *dispatch)
  pairs.extend(procs)
  _wait_for_step(workdir, 4, procs)
  for i in signalled:
    os.kill(_python(procs[i]), signal.SIGTERM)
  codes = [proc.wait(timeout=120) for proc in procs]
  logs = [(tmp_path / f"run.p{i}.log").read_text() for i in range(2)]
  assert codes == [143, 143], [log[-2000:] for log in logs]
  steps = [re.findall(r"^stopped by SIGTERM at step (\d+)", log, re.MULTILINE) for log in logs]
  assert steps[0] == steps[1] and len(steps[0]) == 1, steps
  step = int(steps[0][0])
  assert step < 24 and _saved_steps(workdir)[-1] == step

  again = _pair(tiny, workdir, port, *dispatch)
  pairs.extend(again)
  for i, proc in enumerate(again):
    assert proc.wait(timeout=300) == 0, (tmp_path / f"run.p{i}.log").read_text()[-3000:]
  assert f"resuming at step {step}" in (tmp_path / "run.p0.log").read_text()
  if steps_per_dispatch > 1:
    assert re.search(r"3 steps per dispatch: [1-9]\d* dispatches of several steps",
                     (tmp_path / "run.p0.log").read_text())
  if steps_per_dispatch > 1 and select.resolve("auto") != "cpu_library":
    return  # on XLA's kernels a scan rounds as another layout would (tests/test_dispatch.py)
  assert max_abs_difference(read_checkpoint(workdir, 24), read_checkpoint(pair_reference, 24)) == 0
  evals = result_lines(workdir)[1]
  assert len(evals) >= 2 and evals == [line for line in result_lines(pair_reference)[1]
                                       if line[0] in {e[0] for e in evals}]


# evaluate, predict and export end through cli.run; this one is interrupted as it works.
# Ctrl-C as a terminal delivers it: pytest-xdist's workers pass SIGINT on ignored.
_INTERRUPTED = ("import os, signal, time; from rir_jax import cli; "
                "signal.signal(signal.SIGINT, signal.default_int_handler); "
                "cli.run(lambda argv: os.kill(os.getpid(), signal.SIGINT) or time.sleep(60) or 0)")


def test_ctrl_c_in_a_model_command_is_one_line_and_130():
  result = subprocess.run([sys.executable, "-c", _INTERRUPTED], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert (result.returncode, result.stderr.splitlines()) == (
      130, ["error: stopped by SIGINT before it finished; no file is left half-written"])
