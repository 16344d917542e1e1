"""python -m rir_jax.evaluate: the run's own numbers, per-class results, one-line errors."""
import concurrent.futures
import json
import shutil
import subprocess

import numpy as np
import pytest

from disk_helpers import mount_tmpfs
from launch_helpers import truncate_largest_array_file
from trained_helpers import assert_one_line_exit_2, eval_lines, run_module, shared_run


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
  return shared_run(tmp_path_factory, shared_data)


def _evaluate(workdir, *args):
  result = run_module("evaluate", f"--workdir={workdir}", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.count("\n") == 1 and result.stderr == "", (result.stdout, result.stderr)
  return result.stdout


def test_test_split_top1_equals_the_runs_last_eval_line_exactly(run):
  last = eval_lines(run)[-1]
  line = _evaluate(run, "--split=test", "--step=last")
  report = json.loads((run / "eval" / f"test-{last['step']}.json").read_text())
  assert report["top1_accuracy"] == last["eval/accuracy"]
  assert report["loss"] == pytest.approx(last["eval/loss"], rel=1e-6)
  assert report["examples"] == last["eval/examples"] == 10_000
  assert f"top-1 {last['eval/accuracy']:.4f}" in line
  confusion = np.array(report["confusion_matrix"])
  assert confusion.shape == (10, 10) and confusion.sum() == 10_000
  # The confusion matrix's diagonal is the same predictions' count of correct ones.
  assert np.trace(confusion) == round(report["top1_accuracy"] * 10_000)
  per_class = report["per_class_accuracy"]
  assert list(per_class) == [str(d) for d in range(10)]
  rows = confusion.sum(axis=1)
  np.testing.assert_allclose([per_class[str(d)] for d in range(10)],
                             np.diag(confusion) / rows)
  assert report["top1_accuracy"] <= report["top5_accuracy"] <= 1
  assert (run / "eval" / f"test-{last['step']}-confusion.png").stat().st_size > 0


def test_validation_split_at_the_best_step_equals_its_eval_line(run):
  lines = eval_lines(run)
  best_step = lines[-1]["best/step"]
  at_best = next(line for line in lines if line["step"] == best_step)
  _evaluate(run, "--split=validation", "--step=best")
  report = json.loads((run / "eval" / f"validation-{best_step}.json").read_text())
  assert report["step"] == best_step and report["examples"] == 1000
  assert report["top1_accuracy"] == at_best["val/accuracy"] == lines[-1]["best/accuracy"]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(run, tmp_path):
  no_validation = tmp_path / "no_validation"
  shutil.copytree(run, no_validation, ignore=shutil.ignore_patterns("eval"))
  config = json.loads((no_validation / "config.json").read_text())
  config["data"]["validation_examples"] = 0
  (no_validation / "config.json").write_text(json.dumps(config))
  cases = [
      (["--workdir=" + str(tmp_path / "nowhere")], "no config.json"),
      ([f"--workdir={run}", "--step=soon"], "--step=soon"),
      ([f"--workdir={run}", "--step=7"], "no checkpoint of step 7"),
      ([f"--workdir={run}", "--split=train"], "--split"),
      ([f"--workdir={run}", "--config.data.colour=red"], "colour"),
      ([f"--workdir={run}", "--config.data.download=maybe"], "True or False"),
      ([f"--workdir={no_validation}", "--split=validation"], "without a validation split"),
      ([], "--workdir"),
  ]
  # A copy cut short: one line naming the cause and the steps still kept, and no traceback
  # from the reads Orbax leaves in flight (they printed after it in about half the runs).
  partial = tmp_path / "partial_copy"
  shutil.copytree(run, partial, ignore=shutil.ignore_patterns("eval"))
  steps = sorted(int(p.name) for p in (partial / "checkpoints").iterdir() if p.name.isdigit())
  truncate_largest_array_file(partial / "checkpoints" / str(steps[-1]))
  kept = f"steps {', '.join(map(str, steps[:-1]))} are kept too (--step=N)"
  cases += [([f"--workdir={partial}"], kept)] * 3
  for name in ("config.json", "model.json"):  # cut short by a copy
    cut = tmp_path / f"cut_{name}"
    shutil.copytree(run, cut, ignore=shutil.ignore_patterns("eval"))
    (cut / name).write_text((run / name).read_text()[:40])
    cases.append(([f"--workdir={cut}"], f"{cut / name} is damaged (JSONDecodeError"))
  no_config = tmp_path / "without_config_json"  # a copy that missed config.json
  shutil.copytree(run, no_config, ignore=shutil.ignore_patterns("eval", "config.json"))
  cases.append(([f"--workdir={no_config}"],
                f"holds checkpoints (the newest of step {steps[-1]}) but no config.json"))
  before = sorted(p.name for p in run.iterdir())
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(lambda case: run_module("evaluate", *case[0]), cases))
  for (_, phrase), result in zip(cases, results):
    assert_one_line_exit_2(result, phrase)
  partial_copy = results[cases.index(([f"--workdir={partial}"], kept))].stderr
  assert f"step {steps[-1]} " in partial_copy and "OUT_OF_RANGE" in partial_copy
  assert sorted(p.name for p in run.iterdir()) == before
  assert not (no_validation / "eval").exists()


def test_a_read_only_workdir_still_gives_its_numbers_and_out_writes_the_report(
    run, tmp_path, mounts):
  """A run on storage this machine may only read (a colleague's share, a mounted bucket)."""
  read_only = tmp_path / "read_only"
  mount_tmpfs(read_only, "size=64m")
  mounts.append(read_only)
  shutil.copytree(run, read_only, ignore=shutil.ignore_patterns("eval"), dirs_exist_ok=True)
  subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
  last = eval_lines(run)[-1]
  numbers = f"test step {last['step']}: top-1 {last['eval/accuracy']:.4f}"
  refused = run_module("evaluate", f"--workdir={read_only}")
  assert refused.returncode == 1, refused.stderr[-2000:]
  assert refused.stdout.startswith(numbers) and refused.stdout.count("\n") == 1
  assert refused.stderr.strip().splitlines() == [
      f"error: could not write the report in {read_only / 'eval'}: Read-only file system; "
      "--out=FOLDER writes it elsewhere"]
  out = tmp_path / "reports" / "r1"
  written = _evaluate(read_only, f"--out={out}")
  assert written.startswith(numbers) and str(out / f"test-{last['step']}.json") in written
  report = json.loads((out / f"test-{last['step']}.json").read_text())
  assert report["top1_accuracy"] == last["eval/accuracy"]
  assert (out / f"test-{last['step']}-confusion.png").stat().st_size > 0
