"""Memory as the field bounds it: a container's limit (a cgroup), `ulimit -v`, and XLA
running out mid-run. The first two are refused at start in one line (a container's
kernel otherwise kills the run silently, exit 137); the third is one line with what to do.
"""
import contextlib
import os
import pathlib
import resource
import subprocess

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from launch_helpers import REPO, launch_command
from rir_jax import cli, memory_check, run

# A CNN of 64 channels on 32x32 images needs 1.18 MB of activations per image, so a batch
# of 4096 needs at least 9.7 GB: less than a test machine's memory, more than the limits.
BIG_BATCH = ("--config.batch_size=4096", "--config.model.widths=(64,64)")


def _launch_limited(tiny, workdir, prefix: list[str]) -> subprocess.CompletedProcess:
  """launch.py under a command that limits it (no preexec_fn: this process runs threads)."""
  return subprocess.run([*prefix, *launch_command(tiny, workdir, *BIG_BATCH)], cwd=REPO,
                        text=True, capture_output=True, timeout=120)


def _assert_refused(result, workdir, phrase):
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --config.batch_size=4096 needs at least 9.7 GB") and (
      phrase in last), result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not workdir.exists()


def test_a_batch_beyond_ulimit_v_is_refused_at_start(tiny, tmp_path):
  workdir = tmp_path / "run"
  _assert_refused(_launch_limited(tiny, workdir, ["prlimit", "--as=6000000000"]), workdir,
                  "the address space `ulimit -v` leaves this process")


def _memory_cgroup_folder() -> pathlib.Path | None:
  """Where a child memory cgroup can be made here (v1 or v2), or None (not root, none)."""
  for folder, limit_file in ((pathlib.Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"),
                             (pathlib.Path("/sys/fs/cgroup"), "memory.max")):
    if os.geteuid() == 0 and (folder / "cgroup.procs").exists() and os.access(folder, os.W_OK):
      if limit_file == "memory.limit_in_bytes" or "memory" in (
          folder / "cgroup.subtree_control").read_text().split():
        return folder
  return None


@contextlib.contextmanager
def _memory_cgroup(limit_bytes: int):
  """A child memory cgroup of `limit_bytes` (a command prefix that runs a command in it),
  or a skip where none can be made here (not root, no memory controller, read-only)."""
  root = _memory_cgroup_folder()
  if root is None:
    pytest.skip("needs root and a writable memory cgroup, to make a container's limit")
  group = root / f"rir_jax_test_{os.getpid()}"
  join = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh"]
  try:
    group.mkdir()
    (group / ("memory.max" if root.name == "cgroup" else "memory.limit_in_bytes")).write_text(
        str(limit_bytes))
    subprocess.run([*join, "true"], check=True, capture_output=True)
  except (OSError, subprocess.CalledProcessError) as error:
    if group.exists():
      group.rmdir()
    pytest.skip(f"cannot make a memory cgroup here: {error}")
  try:
    yield join
  finally:
    group.rmdir()  # empty again once its processes have exited


def test_a_batch_beyond_a_containers_memory_limit_is_refused_at_start(tiny, tmp_path):
  with _memory_cgroup(3_000_000_000) as join:
    workdir = tmp_path / "run"
    _assert_refused(_launch_limited(tiny, workdir, join), workdir,
                    "more than the 3.0 GB of this container's memory limit")


def test_a_cgroup_limit_is_the_least_of_the_groups_above(tmp_path):
  own = tmp_path / "cgroup"
  v1 = tmp_path / "v1"
  for folder, limit in ((v1 / "memory", "9223372036854771712"),  # v1's "unlimited"
                        (v1 / "memory" / "jobs", "4000000000"),
                        (v1 / "memory" / "jobs" / "one", "5000000000")):
    folder.mkdir(parents=True)
    (folder / "memory.limit_in_bytes").write_text(limit + "\n")
  own.write_text("5:cpu,cpuacct:/jobs/one\n4:memory:/jobs/one\n")
  assert memory_check._cgroup_limit(v1, own) == 4_000_000_000
  # v2, seen from inside a container: the path names groups not mounted there.
  v2 = tmp_path / "v2"
  v2.mkdir()
  (v2 / "memory.max").write_text("2000000000\n")
  own.write_text("0::/docker/0123abcd\n")
  assert memory_check._cgroup_limit(v2, own) == 2_000_000_000
  (v2 / "memory.max").write_text("max\n")
  assert memory_check._cgroup_limit(v2, own) is None
  assert memory_check._cgroup_limit(v2, tmp_path / "no_such_file") is None


@contextlib.contextmanager
def _address_space_limited(extra_bytes: int):
  """This process may map only `extra_bytes` more, until the block ends."""
  soft, hard = resource.getrlimit(resource.RLIMIT_AS)
  resource.setrlimit(resource.RLIMIT_AS, (memory_check._mapped_bytes() + extra_bytes, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _out_of_memory_error() -> Exception:
  """XLA's own error for an allocation the process cannot make."""
  jnp.zeros(1).block_until_ready()  # the runtime's own memory, mapped before the limit
  with _address_space_limited(1 << 30):
    try:
      jnp.ones((1 << 30,), jnp.float32).block_until_ready()  # 4 GB
    except Exception as error:  # noqa: BLE001
      return error
  raise AssertionError("4 GB were allocated beyond a limit of 1 GB")


def test_running_out_of_memory_mid_run_is_one_line_with_what_to_do(tiny, tmp_path, capsys,
                                                                   monkeypatch):
  error = _out_of_memory_error()
  assert isinstance(error, jax.errors.JaxRuntimeError)

  def out_of_memory(*args, **kwargs):
    raise error
  monkeypatch.setattr(run.loop, "train_and_evaluate", out_of_memory)
  config = ml_collections.ConfigDict({"batch_size": 96, "eval_batch_size": 500})
  (tmp_path / "checkpoints").mkdir()
  assert run._train(config, config, tmp_path, None, None) == 1
  line, = capsys.readouterr().err.splitlines()
  assert line.startswith("error: out of memory (RESOURCE_EXHAUSTED: Out of memory allocating")
  assert ("use a smaller --config.batch_size (now 96) or --config.eval_batch_size (now 500)"
          in line and "GB here" in line and line.endswith("no checkpoint has been saved"))
  assert not (tmp_path / "traceback.txt").exists()  # an expected failure, not a bug

  # The model commands (evaluate, predict, export) say so too, exit 1.
  def command(argv):
    raise error
  with pytest.raises(SystemExit) as stopped:
    cli.run(command)
  assert stopped.value.code == 1
  line, = capsys.readouterr().err.splitlines()
  assert line.startswith("error: out of memory (RESOURCE_EXHAUSTED") and "free some" in line


def test_a_full_disk_is_not_taken_for_memory():
  full = jax.errors.JaxRuntimeError(
      "RESOURCE_EXHAUSTED: Error writing to /run/memory_dump: No space left on device")
  assert memory_check.out_of_memory(full, "x") is None
  assert memory_check.out_of_memory(ValueError("Out of memory"), "x") is None
