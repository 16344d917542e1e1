"""Workdirs on gs://, end to end against a local GCS emulator: no gcsfuse, no local copy.

The run writes config.json, metrics.jsonl, TensorBoard events and Orbax checkpoints as
objects; killed with SIGKILL and re-run, or re-run over a damaged newest checkpoint, it
ends bit-identical to an uninterrupted run on a local disk.
"""
import concurrent.futures
import json
import subprocess
import time

import jax
import numpy as np
import pytest
from PIL import Image

import gcs_emulator
from launch_helpers import REPO, launch_command, read_checkpoint, result_lines, start
import rir_jax
from rir_jax import metrics, storage
from trained_helpers import run_module

BUCKET = "rir-test"
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def emulator():
  with gcs_emulator.running_emulator() as (url, fs):
    gcs_emulator.create_bucket(url, BUCKET)
    yield url, fs


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
  """The uninterrupted run on a local disk that every gs:// run must end equal to."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  result = subprocess.run(launch_command(tiny, workdir), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _last_step(fs, workdir: str) -> int:
  try:
    text = fs.cat_file(workdir.removeprefix("gs://") + "/metrics.jsonl").decode()
  except FileNotFoundError:
    return -1
  return max((json.loads(line)["step"] for line in text.splitlines()), default=-1)


def _run(tiny, workdir: str, log, fs, *, kill_after_step: int | None = None) -> int | None:
  """launch.py into `workdir`; SIGKILLed once metrics reach `kill_after_step` (then None)."""
  proc = start(launch_command(tiny, workdir), log)
  began = time.monotonic()
  while proc.poll() is None:
    assert time.monotonic() - began < 240, f"no end in sight, see {log}"
    if kill_after_step is not None and _last_step(fs, workdir) >= kill_after_step:
      proc.kill()
      proc.wait()
      return None
    time.sleep(0.05)
  return proc.returncode


@pytest.fixture(scope="module")
def killed_and_resumed(emulator, tiny, tmp_path_factory):
  """A gs:// run killed by SIGKILL after step 6, then re-run to the end."""
  _, fs = emulator
  logs = tmp_path_factory.mktemp("logs")
  workdir = f"gs://{BUCKET}/runs/killed"
  assert _run(tiny, workdir, logs / "0.log", fs, kill_after_step=6) is None
  code = _run(tiny, workdir, logs / "1.log", fs)
  assert code == 0, (logs / "1.log").read_text()[-3000:]
  return workdir, (logs / "1.log").read_text()


def _assert_same_result(workdir, reference_workdir):
  assert result_lines(workdir) == result_lines(reference_workdir)
  a, b = read_checkpoint(workdir, 12), read_checkpoint(reference_workdir, 12)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_killed_run_on_gs_resumes_bit_identical_and_writes_the_workdir_contract(
    killed_and_resumed, reference, emulator):
  workdir, log = killed_and_resumed
  _, fs = emulator
  assert "resuming at step" in log and "resuming at step 0" not in log, log[-3000:]
  assert "took over the lock of pid" in log, log[-3000:]  # the killed run's, once stale
  _assert_same_result(storage.as_path(workdir), reference)
  prefix = workdir.removeprefix("gs://")
  assert not fs.exists(f"{prefix}/lock")  # let go at the end
  config = json.loads(fs.cat_file(f"{prefix}/config.json"))
  assert config["num_train_steps"] == 12
  assert fs.glob(f"{prefix}/tensorboard/events.out.tfevents.*")
  assert fs.exists(f"{prefix}/checkpoints/12/commit_success.txt")
  assert not (REPO / "gs:").exists()  # nothing went to a local folder named like the URL


@pytest.mark.slow
def test_damaged_newest_checkpoint_on_gs_is_set_aside_and_the_run_ends_the_same(
    killed_and_resumed, reference, emulator, tiny, tmp_path):
  _, fs = emulator
  source, _ = killed_and_resumed
  workdir = f"gs://{BUCKET}/runs/damaged"
  fs.copy(source.removeprefix("gs://") + "/", workdir.removeprefix("gs://") + "/",
          recursive=True)
  step_12 = workdir.removeprefix("gs://") + "/checkpoints/12"
  data_files = [p for p in fs.find(step_12) if "/d/" in p]
  assert data_files
  for path in data_files:  # truncated, as by an interrupted copy between buckets
    fs.pipe_file(path, fs.cat_file(path)[:10])

  code = _run(tiny, workdir, tmp_path / "log", fs)
  log = (tmp_path / "log").read_text()
  assert code == 0, log[-3000:]
  assert "checkpoint at step 12 does not restore" in log and "resuming at step 10" in log, log[-3000:]
  checkpoints = workdir.removeprefix("gs://") + "/checkpoints"
  assert fs.exists(f"{checkpoints}/damaged-12/commit_success.txt")  # kept, not deleted
  _assert_same_result(storage.as_path(workdir), reference)


def test_missing_bucket_is_a_usage_error_and_writes_nothing(emulator, tiny, tmp_path):
  _, fs = emulator
  result = subprocess.run(launch_command(tiny, "gs://no-such-bucket/runs/x"), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.count("\n") == 1 and "gs://no-such-bucket" in result.stderr
  assert not (REPO / "gs:").exists() and not fs.exists("no-such-bucket")


@pytest.mark.slow
def test_a_second_command_on_a_busy_gs_workdir_is_refused_naming_the_first(
    emulator, tiny, tmp_path):
  _, fs = emulator
  workdir = f"gs://{BUCKET}/runs/busy"
  command = launch_command(tiny, workdir, "--config.num_train_steps=100000")
  first = start(command, tmp_path / "first.log")
  try:
    began = time.monotonic()
    while not fs.exists(f"{BUCKET}/runs/busy/lock"):
      assert first.poll() is None and time.monotonic() - began < 120, (
          (tmp_path / "first.log").read_text()[-3000:])
      time.sleep(0.1)
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is in use by pid {first.pid} on host" in second.stderr.splitlines()[-1]
    assert first.poll() is None  # the first run trains on, untouched
  finally:
    first.terminate()
    first.wait(timeout=120)


@pytest.mark.slow
def test_a_gs_run_with_a_validation_split_is_evaluated_exported_and_used_from_the_bucket(
    emulator, tiny, tmp_path):
  """Its best checkpoint goes to the bucket (not to a local ./gs:/ folder), and evaluate,
  export and predict take the gs:// workdir as they take a local one."""
  _, fs = emulator
  workdir = f"gs://{BUCKET}/runs/validated"
  prefix = workdir.removeprefix("gs://")
  trained = subprocess.run(launch_command(tiny, workdir, "--config.data.validation_examples=64"),
                           cwd=REPO, capture_output=True, text=True, timeout=300)
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert fs.glob(f"{prefix}/checkpoints/best/*/commit_success.txt")
  assert not (REPO / "gs:").exists()
  lines = metrics.read_metrics(f"{workdir}/metrics.jsonl")
  best = lines[-1]["best/step"]
  picture = tmp_path / "picture.png"
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(picture)
  pictures = f"{BUCKET}/pictures"  # a folder of pictures in the bucket, the same pixels
  for name in ("a.png", "more/b.png", "._a.png"):  # the last a macOS copy's shadow file
    fs.pipe_file(f"{pictures}/{name}", picture.read_bytes())
  commands = [("evaluate", f"--workdir={workdir}", "--split=validation", "--step=best"),
              ("export", f"--workdir={workdir}", f"--out={workdir}/model.msgpack"),
              ("predict", f"--workdir={workdir}", "--json", str(picture), f"gs://{pictures}")]
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    results = list(pool.map(lambda command: run_module(*command), commands))
  for result in results:  # nothing on stderr but TensorStore's note of the emulator's token
    noise = [line for line in result.stderr.splitlines()
             if "GOOGLE_AUTH_TOKEN_FOR_TESTING" not in line]
    assert result.returncode == 0 and noise == [], result.stderr[-3000:]
  report = json.loads(fs.cat_file(f"{prefix}/eval/validation-{best}.json"))
  at_best = next(line for line in lines if line["step"] == best and "val/accuracy" in line)
  assert report["top1_accuracy"] == at_best["val/accuracy"]
  assert fs.exists(f"{prefix}/model.msgpack")
  predicted = [json.loads(line) for line in results[2].stdout.splitlines()]
  assert [p["file"] for p in predicted] == [
      str(picture), f"gs://{pictures}/a.png", f"gs://{pictures}/more/b.png"]
  assert len(predicted[0]["top_k"]) == 5 and all(
      p["top_k"] == predicted[0]["top_k"] for p in predicted)
  no_bucket = run_module("predict", f"--workdir={workdir}", "gs://no-such-bucket/a.png")
  assert no_bucket.returncode == 2 and no_bucket.stderr.strip().splitlines()[-1] == (
      "error: bucket gs://no-such-bucket does not exist or cannot be read with this "
      "machine's credentials"), no_bucket.stderr[-3000:]
  # In Python, and so for --config.init_from (rir_jax/warm_start.py loads through it).
  from_bucket = rir_jax.load(workdir, step="best")
  from_export = rir_jax.load(f"{workdir}/model.msgpack")
  for a, b in zip(jax.tree.leaves(from_bucket[1]), jax.tree.leaves(from_export[1]), strict=True):
    np.testing.assert_array_equal(a, b)
