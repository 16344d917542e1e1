"""Faults real runs meet that kill -9 does not cover: torn logs, partial checkpoint folders,
a failed resume, full and read-only disks under the writers, non-finite losses.

Each ends in one clear line (or a warning and a resumed run), a resumable workdir, and
nothing lost.
"""
import json
import logging
import shutil
import subprocess
import time

import jax
import numpy as np
import pytest

from disk_helpers import fill, mount_tmpfs
from launch_helpers import REPO, launch_command, read_checkpoint, start, tiny_config
from rir_jax import loop, metrics

# A failed restore leaves Orbax's asyncio tasks unawaited (see test_faults.py).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def reference(tiny, synthetic, tmp_path_factory):
  """Six uninterrupted steps, in process: checkpoints 2, 4, 6."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  final = loop.train_and_evaluate(tiny_config(tiny), workdir, synthetic)
  return workdir, final


def _copy(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  return workdir


def _project_log(caplog):
  return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("rir_jax"))


def _one_error_line(stderr: str) -> str:
  assert "Traceback" not in stderr, stderr[-3000:]
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, stderr[-3000:]
  return errors[0]


# --- metrics.jsonl: a torn last line, garbage in the middle --------------------------------

@pytest.mark.parametrize("damage", ["torn_last_line", "garbage_mid_file"])
def test_damaged_metrics_lines_are_dropped_with_a_warning_and_the_run_resumes(
    damage, tiny, synthetic, reference, tmp_path, caplog):
  workdir = _copy(reference, tmp_path)
  path = workdir / "metrics.jsonl"
  good = metrics.read_metrics(path)
  text = path.read_text()
  if damage == "torn_last_line":  # a power cut in the middle of an append
    path.write_text(text + '{"step": 6, "train/lo')
  else:
    lines = text.splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + "\x00\x00garbage\n[1, 2]\n" + "".join(lines[2:]))
  caplog.set_level(logging.INFO, logger="rir_jax")

  assert loop.train_and_evaluate(tiny_config(tiny), workdir, synthetic) == reference[1]
  assert metrics.read_metrics(path) == good
  assert "dropped" in _project_log(caplog) and "unreadable line" in _project_log(caplog)
  assert (workdir / "metrics.jsonl.dropped").exists()  # the file as it was, for a look


@pytest.mark.parametrize("copy", ["whole", "without_metrics", "older_metrics"])
def test_metrics_lines_a_copy_lost_are_named_and_the_run_goes_on(
    copy, tiny, synthetic, reference, tmp_path, caplog):
  """Every checkpoint is saved after a line of its own step: a file without it lost lines."""
  workdir = _copy(reference, tmp_path)
  path = workdir / "metrics.jsonl"
  if copy == "without_metrics":
    path.unlink()
  elif copy == "older_metrics":  # copied while the run was at step 2, the rest later
    path.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                            if json.loads(line)["step"] <= 2))
  caplog.set_level(logging.INFO, logger="rir_jax")

  assert loop.train_and_evaluate(tiny_config(tiny), workdir, synthetic) == reference[1]
  assert "resuming at step 6" in _project_log(caplog)
  warning = {
      "whole": None,
      "without_metrics": "metrics.jsonl is missing while the run resumes at step 6",
      "older_metrics": "has no line of step 6, where the run resumes (a partial or older "
                       "copy?): its lines after step 2 up to step 6 are lost",
  }[copy]
  lost = [line for line in _project_log(caplog).splitlines() if "lost" in line]
  if warning is None:
    assert lost == []
  else:
    assert len(lost) == 1 and warning in lost[0], lost


# --- an empty or partial step folder (an interrupted copy) ---------------------------------

@pytest.mark.parametrize("damage", ["empty_newer_folder", "step_without_its_item"])
def test_an_empty_or_partial_step_folder_does_not_block_the_good_checkpoints(
    damage, tiny, synthetic, reference, tmp_path, caplog):
  workdir = _copy(reference, tmp_path)
  checkpoints = workdir / "checkpoints"
  if damage == "empty_newer_folder":
    (checkpoints / "100").mkdir()
    config, resumed = tiny_config(tiny), 6
  else:
    shutil.rmtree(checkpoints / "6" / "default")
    config, resumed = tiny_config(tiny), 4
  caplog.set_level(logging.INFO, logger="rir_jax")

  assert loop.train_and_evaluate(config, workdir, synthetic) == reference[1]
  assert f"resuming at step {resumed}" in _project_log(caplog)
  damaged = "damaged-100" if damage == "empty_newer_folder" else "damaged-6"
  assert (checkpoints / damaged).is_dir()  # set aside, never deleted
  for x, y in zip(jax.tree.leaves(read_checkpoint(workdir, 6)),
                  jax.tree.leaves(read_checkpoint(reference[0], 6)), strict=True):
    np.testing.assert_array_equal(x, y)


def test_only_partial_step_folders_are_set_aside_and_the_run_starts_over(
    tiny, synthetic, reference, tmp_path, caplog):
  workdir = tmp_path / "run"
  (workdir / "checkpoints" / "8").mkdir(parents=True)
  caplog.set_level(logging.INFO, logger="rir_jax")
  assert loop.train_and_evaluate(tiny_config(tiny), workdir, synthetic) == reference[1]
  assert "starting at step 0" in _project_log(caplog)
  assert (workdir / "checkpoints" / "damaged-8").is_dir()


# --- a failed resume leaves config.json alone; a shorter run refuses a later checkpoint ----

def _launch(tiny, workdir, *flags, timeout=300):
  return subprocess.run(launch_command(tiny, workdir, *flags), cwd=REPO, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture(scope="module")
def launched(tiny, tmp_path_factory):
  """The tiny config's 12 steps through launch.py."""
  workdir = tmp_path_factory.mktemp("launched") / "run"
  result = _launch(tiny, workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_a_failed_resume_with_another_config_leaves_config_json_as_it_was(
    tiny, launched, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(launched, workdir)
  before = (workdir / "config.json").read_text()
  other = _launch(tiny, workdir, "--config.model.widths=(4,8)", "--config.num_train_steps=14",
                  "--config.allow_config_change=True")
  assert other.returncode == 1, other.stderr[-3000:]
  assert "restores" in _one_error_line(other.stderr)
  assert (workdir / "config.json").read_text() == before
  again = _launch(tiny, workdir)  # the original command is still welcome
  assert again.returncode == 0, again.stderr[-3000:]


def test_fewer_steps_than_the_saved_checkpoint_is_refused_not_reported_as_final(
    tiny, launched, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(launched, workdir)
  before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
  shorter = _launch(tiny, workdir, "--config.num_train_steps=6",
                    "--config.allow_config_change=True")
  assert shorter.returncode == 2, shorter.stderr[-3000:]
  assert "step 12" in _one_error_line(shorter.stderr)
  assert "final eval accuracy" not in shorter.stdout
  assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before


# --- a non-finite loss names the checkpoint it keeps ----------------------------------------

@pytest.mark.parametrize("checkpoint_every", [1, 1000])
def test_a_nonfinite_loss_names_the_checkpoint_actually_kept(tiny, tmp_path, checkpoint_every):
  workdir = tmp_path / "run"
  result = _launch(tiny, workdir, "--config.optimizer.learning_rate=1e30",
                   f"--config.checkpoint_every_steps={checkpoint_every}",
                   "--config.log_every_steps=1")
  assert result.returncode == 1, result.stderr[-3000:]
  line = _one_error_line(result.stderr)
  kept = sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())
  if kept:
    assert f"checkpoint kept is step {kept[-1]}" in line, (line, kept)
  else:
    assert "no checkpoint was saved" in line, line


# --- disks: full under the writers, read-only checkpoints, full at start --------------------

def test_a_full_disk_under_tensorboard_exits_1_at_once(tiny, tmp_path, mounts):
  full = tmp_path / "full"
  mount_tmpfs(full, "size=256k")
  mounts.append(full)
  fill(full)
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "tensorboard").symlink_to(full)
  result = _launch(tiny, workdir, "--config.num_train_steps=400", timeout=240)
  assert result.returncode == 1, result.stderr[-3000:]
  line = _one_error_line(result.stderr)
  assert "could not write metrics" in line and "No space left on device" in line, line


def test_a_disk_filling_up_under_the_metrics_exits_1_within_seconds(tiny, tmp_path, mounts):
  """No checkpoint until the end: the metrics and TensorBoard writes meet the full disk."""
  disk = tmp_path / "disk"
  mount_tmpfs(disk, "size=4m")
  mounts.append(disk)
  workdir = disk / "run"
  proc = start(launch_command(tiny, workdir, "--config.num_train_steps=4000",
                              "--config.checkpoint_every_steps=4000"), tmp_path / "run.log")
  try:
    while _last_logged_step(workdir) < 4:
      assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
      time.sleep(0.05)
    fill(disk)
    filled = time.monotonic()
    code = proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  log = (tmp_path / "run.log").read_text()
  assert code == 1, log[-3000:]
  line = _one_error_line(log)
  assert "No space left on device" in line, line
  assert time.monotonic() - filled < 30  # never the hang of a dead writer thread


def _last_logged_step(workdir) -> int:
  try:
    return max(line["step"] for line in metrics.read_metrics(workdir / "metrics.jsonl"))
  except (FileNotFoundError, ValueError):
    return -1


def test_read_only_checkpoints_fail_in_seconds_with_one_truthful_line(tiny, tmp_path, mounts):
  workdir = tmp_path / "run"
  mount_tmpfs(workdir / "checkpoints", "ro", "size=1m")
  mounts.append(workdir / "checkpoints")
  began = time.monotonic()
  result = _launch(tiny, workdir, timeout=240)
  assert result.returncode == 2, result.stderr[-3000:]
  line = _one_error_line(result.stderr)
  assert "checkpoints" in line and "Read-only file system" in line, line
  assert "intact" not in line  # there are no earlier checkpoints to speak of
  assert time.monotonic() - began < 120


def test_checkpoints_turning_read_only_mid_run_fail_in_seconds(tiny, tmp_path, mounts):
  workdir = tmp_path / "run"
  mount_tmpfs(workdir / "checkpoints", "size=8m")
  mounts.append(workdir / "checkpoints")
  proc = start(launch_command(tiny, workdir, "--config.num_train_steps=4000",
                              "--config.checkpoint_every_steps=20"), tmp_path / "run.log")
  try:
    while _last_logged_step(workdir) < 6:
      assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
      time.sleep(0.05)
    subprocess.run(["mount", "-o", "remount,ro", str(workdir / "checkpoints")], check=True)
    made_read_only = time.monotonic()
    code = proc.wait(timeout=400)
  finally:
    if proc.poll() is None:
      proc.kill()
  log = (tmp_path / "run.log").read_text()
  assert code == 1, log[-3000:]
  line = _one_error_line(log)
  assert "Read-only file system" in line and "no checkpoint has been saved" in line, line
  assert time.monotonic() - made_read_only < 60  # not Orbax's 300 s signal timeout


def test_a_full_disk_at_start_is_one_line_and_leaves_no_temporary_file(tiny, tmp_path,
                                                                       mounts):
  disk = tmp_path / "disk"
  mount_tmpfs(disk, "size=128k")
  mounts.append(disk)
  fill(disk)
  workdir = disk / "run"
  result = _launch(tiny, workdir, timeout=240)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "No space left on device" in _one_error_line(result.stderr)
  assert not list(disk.rglob("*.tmp"))


def test_a_full_disk_during_a_save_is_one_line(tiny, tmp_path, mounts):
  """Room for the start and the first checkpoints, not for all: the save that fails."""
  disk = tmp_path / "disk"
  mount_tmpfs(disk, "size=1m")
  mounts.append(disk)
  result = _launch(tiny, disk / "run", "--config.num_train_steps=40",
                   "--config.keep_checkpoints=100", timeout=240)
  assert result.returncode == 1, result.stderr[-3000:]
  line = _one_error_line(result.stderr)
  assert "No space left on device" in line, line
  newest = max(int(p.name) for p in (disk / "run" / "checkpoints").glob("*") if p.name.isdigit())
  assert f"step {newest} is intact" in line, line
  assert len(result.stderr.splitlines()) < 60, result.stderr[-3000:]
