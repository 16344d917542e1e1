"""--config.data.validation_examples: a held-out split for evals, the best checkpoint on it."""
import concurrent.futures
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from launch_helpers import start
from rir_jax import data, loading, metrics
from rir_jax.data import validation
from trained_helpers import REPO, eval_lines, mnist_flags, shared_run, train


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
  return shared_run(tmp_path_factory, shared_data)


def _numbered_dataset(n=1000):
  """Each training image's pixels hold its index, so splits can be traced."""
  images = np.arange(n, dtype=np.uint8).repeat(4).reshape(n, 2, 2, 1)
  return data.Dataset(name="numbered", train_images=images, train_labels=np.arange(n),
                      test_images=images[:10], test_labels=np.arange(10), num_classes=10,
                      augmentation="none", mean=np.zeros(1), std=np.ones(1))


def test_the_split_is_a_function_of_n_and_seed_and_disjoint_from_training():
  a = validation.carve(_numbered_dataset(), 100, seed=0)
  b = validation.carve(_numbered_dataset(), 100, seed=0)
  other = validation.carve(_numbered_dataset(), 100, seed=1)
  np.testing.assert_array_equal(a.validation_labels, b.validation_labels)
  assert set(a.validation_labels) != set(other.validation_labels)
  assert len(a.validation_labels) == 100 and len(a.train_labels) == 900
  assert set(a.validation_labels).isdisjoint(a.train_labels)
  assert set(a.validation_labels) | set(a.train_labels) == set(range(1000))
  np.testing.assert_array_equal(a.validation_images[:, 0, 0, 0],
                                a.validation_labels.astype(np.uint8))
  # The normalisation is measured on what is trained on, not on the held-out examples.
  expected = (a.train_images.astype(np.float64) / 255).mean()
  assert a.mean[0] == pytest.approx(expected, rel=1e-6)
  for bad in (0, 1000):
    with pytest.raises(data.DataError, match="validation_examples"):
      validation.carve(_numbered_dataset(), bad, seed=0)


def test_evals_run_on_validation_and_the_test_split_once_at_the_end(run):
  lines = eval_lines(run)
  assert [line["step"] for line in lines] == [20, 40, 60]
  assert all(line["val/examples"] == 1000 for line in lines)
  assert ["eval/accuracy" in line for line in lines] == [False, False, True]
  assert lines[-1]["eval/examples"] == 10_000
  accuracies = [line["val/accuracy"] for line in lines]
  best = int(np.argmax(accuracies))  # the first of equals
  for line in lines[best:]:
    assert (line["best/step"], line["best/accuracy"]) == (lines[best]["step"], accuracies[best])
  assert sorted(p.name for p in (run / "checkpoints" / "best").iterdir()) == [
      str(lines[best]["step"])]


def _killed_then_resumed(workdir, shared_data, log, killed_when) -> None:
  """Trains, SIGKILLs the run as soon as `killed_when(workdir)`, then runs it to the end."""
  command = [sys.executable, str(REPO / "launch.py"), f"--workdir={workdir}", "--jax_cache_dir=",
             *mnist_flags(shared_data)]
  proc = start(command, log)
  began = time.monotonic()
  while proc.poll() is None and time.monotonic() - began < 300:
    if killed_when(workdir):
      proc.kill()
      break
    time.sleep(0.02)
  assert proc.wait() == -9, "the run ended before it could be killed"
  train(workdir, shared_data)  # the same command again: resumes


def _after_the_step_40_eval(workdir):  # the best just chosen; its checkpoint maybe not yet
  return any(line.get("step", 0) >= 40 for line in _lines(workdir))


def _after_checkpoint_40(workdir):  # resumes at 40: the best so far must come back
  return (workdir / "checkpoints" / "40" / "commit_success.txt").exists()


def test_a_killed_and_resumed_run_keeps_the_same_best(run, shared_data, tmp_path):
  kills = {"eval": _after_the_step_40_eval, "checkpoint": _after_checkpoint_40}
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    list(pool.map(lambda name: _killed_then_resumed(tmp_path / name, shared_data,
                                                    tmp_path / f"{name}.log", kills[name]),
                  kills))
  keys = ("step", "val/accuracy", "val/loss", "best/step", "best/accuracy", "eval/accuracy")
  strip = lambda lines: [{k: l.get(k) for k in keys} for l in lines]
  their_step, theirs = _best_variables(run)
  assert their_step == eval_lines(run)[-1]["best/step"]
  for name in kills:
    assert strip(eval_lines(tmp_path / name)) == strip(eval_lines(run)), name
    step, ours = _best_variables(tmp_path / name)
    assert step == their_step, name
    for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
      np.testing.assert_array_equal(x, y)


def _lines(workdir):
  try:
    return metrics.read_metrics(workdir / "metrics.jsonl")
  except (FileNotFoundError, ValueError):  # not there yet, or a line half written
    return []


def _best_variables(workdir):
  trained = loading.load_trained(workdir, "best")
  return trained.step, trained.variables


@pytest.mark.parametrize("value", ["-1", "60000"])
def test_an_impossible_size_is_one_line_exit_2(shared_data, tmp_path, value):
  result = subprocess.run(
      [sys.executable, "launch.py", f"--workdir={tmp_path / 'w'}", "--jax_cache_dir=",
       *mnist_flags(shared_data), f"--config.data.validation_examples={value}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
  assert "validation_examples" in errors[0]
  assert not (tmp_path / "w").exists()
