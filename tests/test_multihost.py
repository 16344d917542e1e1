"""Two processes on loopback, two fake CPU devices each: a two-host run on one machine.

They must train what one process with the same four devices trains, share checkpoints
with one-process runs both ways, and fail (not hang) when a peer dies; re-running the
same commands resumes. See DESIGN.md section 6 for the traps these settings avoid.
"""
import os
import pathlib
import re
import runpy
import shutil
import signal
import socket
import subprocess
import time

import pytest

from launch_helpers import (free_port, launch_command, max_abs_difference, read_checkpoint,
                            result_lines, start)
from rir_jax import metrics
from rir_jax import workdir as workdir_lib

pytestmark = pytest.mark.slow

TIMEOUT_S = 10  # peers: heartbeats, start-up, shutdown, and each CPU collective
LIMIT_S = 240   # hard wall-clock cap per process (timeout -k): nothing can hang the suite
TWO_DEVICES = (f"--xla_force_host_platform_device_count=2 "
               f"--xla_cpu_collective_timeout_seconds={TIMEOUT_S}")
FOUR_DEVICES = "--xla_force_host_platform_device_count=4"
# PJRT_NPROC=8, which two devices per process need on two cores, comes from conftest.py.


class Processes:
  """Launched runs, each in its own process group so a kill reaches it and only it."""

  def __init__(self):
    self.running: list[subprocess.Popen] = []

  def launch(self, command, log, xla_flags) -> subprocess.Popen:
    proc = start(["timeout", "-k", "5", str(LIMIT_S), *command], log, XLA_FLAGS=xla_flags)
    self.running.append(proc)
    return proc

  def pair(self, tiny, workdir, port, *flags, slow=("", "")) -> list[subprocess.Popen]:
    """`slow[i]`: process i's compile delays (tests/slow_peer.py), "" for none."""
    commands = [launch_command(tiny, workdir, f"--coordinator_address=127.0.0.1:{port}",
                               "--num_processes=2", f"--process_id={i}",
                               f"--distributed_timeout={TIMEOUT_S}", *flags) for i in range(2)]
    for command, delays in zip(commands, slow):
      if delays:
        command[1:2] = [str(pathlib.Path(__file__).parent / "slow_peer.py"), delays]
    return [self.launch(command, workdir.parent / f"{workdir.name}.p{i}.log", TWO_DEVICES)
            for i, command in enumerate(commands)]

  def single(self, tiny, workdir, *flags) -> subprocess.Popen:
    return self.launch(launch_command(tiny, workdir, *flags),
                       workdir.parent / f"{workdir.name}.log", FOUR_DEVICES)

  def kill_all(self):
    for proc in self.running:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def processes():
  procs = Processes()
  yield procs
  procs.kill_all()


def _log(workdir, process=None):
  name = workdir.name + ("" if process is None else f".p{process}") + ".log"
  return (workdir.parent / name).read_text()


def _assert_ok(procs, workdir):
  for i, proc in enumerate(procs):
    code = proc.wait()
    assert code == 0, _log(workdir, i if len(procs) > 1 else None)[-3000:]


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
  """The same 12 steps, global batch 16: 1 process x 4 devices and 2 x 2, side by side."""
  folder = tmp_path_factory.mktemp("runs")
  procs = Processes()
  try:
    single = procs.single(tiny, folder / "single")
    pair = procs.pair(tiny, folder / "pair", free_port())
    _assert_ok([single], folder / "single")
    _assert_ok(pair, folder / "pair")
  finally:
    procs.kill_all()
  return folder


def test_two_processes_train_what_one_process_trains(runs):
  pair, single = read_checkpoint(runs / "pair", 12), read_checkpoint(runs / "single", 12)
  difference = max_abs_difference(pair["params"], single["params"])
  print(f"max |params(2 processes x 2 devices) - params(1 x 4)| = {difference:.3g}")
  assert difference <= 1e-6
  (pair_train, pair_eval), (single_train, single_eval) = (
      result_lines(runs / "pair"), result_lines(runs / "single"))
  assert [line[0] for line in pair_eval] == [4, 8, 12]  # once each: process 0 alone writes
  assert [line[0] for line in pair_train] == [line[0] for line in single_train]
  for a, b in zip(pair_eval, single_eval):
    assert a[1] == pytest.approx(b[1], abs=1e-5) and a[3] == b[3] == 512


def test_checkpoints_restore_across_process_layouts(tiny, runs, tmp_path, processes):
  """Two processes' step 12 resumes in one process and the other way round, to step 16."""
  more = ["--config.num_train_steps=16", "--config.allow_config_change=True"]
  for name in ("pair", "single"):
    shutil.copytree(runs / name, tmp_path / f"from_{name}")
  one = processes.single(tiny, tmp_path / "from_pair", *more)
  two = processes.pair(tiny, tmp_path / "from_single", free_port(), *more)
  _assert_ok([one], tmp_path / "from_pair")
  _assert_ok(two, tmp_path / "from_single")
  assert "resuming at step 12" in _log(tmp_path / "from_pair")
  assert "resuming at step 12" in _log(tmp_path / "from_single", 0)
  difference = max_abs_difference(read_checkpoint(tmp_path / "from_pair", 16)["params"],
                                  read_checkpoint(tmp_path / "from_single", 16)["params"])
  print(f"max |params| difference at step 16 after crossing layouts: {difference:.3g}")
  assert difference <= 1e-5


def _wait_for_step(workdir, step, procs):
  path = workdir / "metrics.jsonl"
  while not (path.exists() and any(l["step"] >= step for l in metrics.read_metrics(path))):
    assert all(p.poll() is None for p in procs), "a process ended before the kill"
    time.sleep(0.05)


def test_a_killed_process_fails_its_peer_in_bounded_time_and_the_pair_resumes(
    tiny, runs, tmp_path, processes):
  workdir, port = tmp_path / "run", free_port()
  first, second = processes.pair(tiny, workdir, port)
  _wait_for_step(workdir, 6, [first, second])
  os.killpg(second.pid, signal.SIGKILL)  # process 1 and its `timeout` wrapper, by pid
  killed_at = time.monotonic()
  code = first.wait(timeout=LIMIT_S)
  waited = time.monotonic() - killed_at
  print(f"process 0 exited with {code} {waited:.1f} s after process 1 was killed")
  assert code != 0
  assert waited < 6 * TIMEOUT_S

  again = processes.pair(tiny, workdir, port)  # the same commands, the same port
  _assert_ok(again, workdir)
  resumed = re.search(r"resuming at step (\d+)", _log(workdir, 0))
  assert resumed and int(resumed.group(1)) > 0
  assert result_lines(workdir) == result_lines(runs / "pair")
  assert max_abs_difference(read_checkpoint(workdir, 12), read_checkpoint(runs / "pair", 12)) == 0


# Past gloo's fixed 30 s for the key exchange of a first collective, and past TIMEOUT_S.
COMPILE_SKEW_S = 35


def test_a_peer_compiling_slower_does_not_fail_the_pair(tiny, runs, tmp_path, processes):
  """Each process reaches each program's first run while its peer still compiles it: the
  state (before the checkpoint manager's first collective), the train step and the eval.
  They wait for each other instead of failing, and train what an even pair trains."""
  workdir = tmp_path / "run"
  pair = processes.pair(tiny, workdir, free_port(), slow=(
      f"train_step={COMPILE_SKEW_S}", f"create_train_state={COMPILE_SKEW_S},evaluate=15"))
  _assert_ok(pair, workdir)
  assert result_lines(workdir) == result_lines(runs / "pair")
  assert max_abs_difference(read_checkpoint(workdir, 12), read_checkpoint(runs / "pair", 12)) == 0


def test_a_peer_killed_while_the_other_waits_for_it_fails_the_other(tiny, tmp_path, processes):
  workdir = tmp_path / "run"
  waiting, slow = processes.pair(tiny, workdir, free_port(),
                                 slow=("", f"create_train_state={LIMIT_S}"))
  time.sleep(COMPILE_SKEW_S)  # process 0 has compiled the state and waits for process 1
  assert waiting.poll() is None
  os.killpg(slow.pid, signal.SIGKILL)
  killed_at = time.monotonic()
  code = waiting.wait(timeout=LIMIT_S)
  waited = time.monotonic() - killed_at
  print(f"process 0 exited with {code} {waited:.1f} s after process 1 was killed")
  assert code == 1 and waited < 6 * TIMEOUT_S
  assert "error: " in _log(workdir, 0)  # one line of ours, not a crash


def _refused_pair(tiny, folders, flags, tmp_path, processes) -> list[str]:
  """Launches process i in `folders[i]` with `flags[i]`; the last line each printed, once
  both have exited 2."""
  port = free_port()
  procs = [processes.launch(
      launch_command(tiny, folder, f"--coordinator_address=127.0.0.1:{port}",
                     "--num_processes=2", f"--process_id={i}",
                     f"--distributed_timeout={TIMEOUT_S}", *flags[i]),
      tmp_path / f"p{i}.log", TWO_DEVICES) for i, folder in enumerate(folders)]
  last_lines = []
  for i, proc in enumerate(procs):
    code, log = proc.wait(), (tmp_path / f"p{i}.log").read_text()
    assert code == 2, log[-3000:]
    last_lines.append(log.strip().splitlines()[-1])
  return last_lines


def test_a_workdir_that_is_not_one_folder_for_every_process_is_refused_by_all(tiny, tmp_path,
                                                                             processes):
  """Each host's own disk (here: another folder per process): it would train, and its
  resume would hang, process 0 restoring its newest step, process 1 starting afresh."""
  folders = [tmp_path / "host0" / "run", tmp_path / "host1" / "run"]
  last_lines = _refused_pair(tiny, folders, ((), ()), tmp_path, processes)
  assert last_lines == [
      f"error: --workdir={folder} is not one folder for every process: process 1 on "
      f"{socket.gethostname()} cannot see what process 0 wrote there (a folder on each "
      "host's own disk?); give every process the same shared folder (a network file "
      "system, or gs://)" for folder in folders]
  assert not folders[0].exists() and not folders[1].exists()  # nothing written, nothing left


def test_a_process_started_with_another_config_is_refused_by_all(tiny, tmp_path, processes):
  """A stale checkout or a flag left out on one host: it trained with its own learning
  rate, silently. Only each host's data paths may differ."""
  workdir = tmp_path / "run"
  last_lines = _refused_pair(tiny, [workdir, workdir],
                             ((), ("--config.optimizer.learning_rate=0.5",)), tmp_path, processes)
  assert last_lines == 2 * [
      f"error: process 1 on {socket.gethostname()} runs another config than process 0 "
      "(optimizer.learning_rate (0.1 -> 0.5)); give every process the same command (only "
      "--config.data.data_dir and manual_dir may differ between hosts)"]
  assert not workdir.exists()

  config = runpy.run_path(str(tiny))["get_config"]()
  first = workdir_lib.config_json(config)
  config.data.data_dir, config.data.manual_dir = "/mnt/host1/data", "/mnt/host1/raw"
  assert workdir_lib.process_differences(first, config) == []
  config.steps_per_dispatch = 3  # free on a resume, not between processes
  assert workdir_lib.process_differences(first, config) == ["steps_per_dispatch (1 -> 3)"]
