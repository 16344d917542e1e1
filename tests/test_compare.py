"""benchmarks/compare.py end to end on a tiny budget: files, numbers, reuse of finished runs."""
import json
import re
import signal
import sys
import time

import pytest

from benchmarks import compare
from launch_helpers import start
from rir_jax.kernels import select

pytestmark = pytest.mark.slow
TINY = ["--dataset=synthetic", "--seeds=1", "--batch_size=16"]


def first_run(out, model=0):
  return json.loads((out / "results.json").read_text())["models"][model]["runs"][0]


def test_writes_the_four_files_reuses_finished_runs_and_replaces_stale_ones(tmp_path, capsys):
  out = tmp_path / "b"
  assert compare.main([*TINY, "--models=cnn,rir", "--steps=4", f"--out={out}"]) == 0
  for name in ("results.json", "results.md", "curves.png", "throughput.png"):
    assert (out / name).stat().st_size > 0, name
  results = json.loads((out / "results.json").read_text())
  assert [m["model"] for m in results["models"]] == ["cnn", "rir"]
  assert results["convolutions"] == select.resolve("auto")
  for model in results["models"]:
    assert 0 <= model["accuracy_mean"] <= 1 and model["params"] > 0
    # ~0.27M-parameter models on 32x32 images: tens of MFLOPs, most in convolutions.
    assert model["forward_flops_per_example"] > 20e6 and model["compile_seconds"] > 0
    evals = [p for p in model["runs"][0]["curve"] if "eval/accuracy" in p]
    assert len(evals) >= 4  # the curve has a shape even on a budget of 4 steps
    assert model["runs"][0]["trained_from_step"] == 0
    assert model["wall_seconds_mean"] == model["runs"][0]["wall_seconds"] > 0
  table = (out / "results.md").read_text()
  assert "| cnn |" in table and "| rir |" in table and "--steps=4" in table

  before = first_run(out)
  assert compare.main([*TINY, "--models=cnn", "--steps=4", f"--out={out}"]) == 0
  assert first_run(out) == before  # the finished run was not trained again
  assert "another config" not in capsys.readouterr().out

  # A run whose process ended after its last checkpoint resumes there: its wall time
  # covers none of the training, so it stays out of the mean.
  (out / "runs" / "cnn" / "seed0" / "result.json").unlink()
  assert compare.main([*TINY, "--models=cnn", "--steps=4", f"--out={out}"]) == 0
  resumed = json.loads((out / "results.json").read_text())["models"][0]
  assert resumed["runs"][0]["trained_from_step"] == 4 and resumed["wall_seconds_mean"] is None
  row = next(l for l in (out / "results.md").read_text().splitlines() if l.startswith("| cnn |"))
  assert row.endswith("| n/a |")  # the wall column

  assert compare.main([*TINY, "--models=cnn", "--steps=6", f"--out={out}"]) == 0
  assert "another config: moved to" in capsys.readouterr().out
  assert first_run(out)["curve"][-1]["step"] == 6
  # The out-of-date run was set aside whole, not deleted.
  aside, = (out / "runs").rglob("seed0.replaced-*")
  assert json.loads((aside / "result.json").read_text())["curve"][-1]["step"] == 4


def test_a_run_of_other_kernels_is_neither_reused_nor_resumed(tmp_path):
  """A resume may change the kernels (the same math), but a study times its runs."""
  from configs import default
  from rir_jax import workdir as workdir_lib
  config = default.get_config()
  config.kernels = "xla"
  saved = {**workdir_lib.config_json(config), "kernels": "cpu_library"}
  (tmp_path / "result.json").write_text(json.dumps({"config": saved, "trained_from_step": 0}))
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert compare.finished(config, tmp_path) is None
  assert compare._out_of_date(tmp_path, config)
  config.kernels = "cpu_library"
  assert compare.finished(config, tmp_path)["config"] == saved
  assert not compare._out_of_date(tmp_path, config)


def test_wall_time_counts_only_runs_trained_in_one_process(tmp_path):
  from rir_jax import metrics
  log = tmp_path / "metrics.jsonl"
  writer_lines = [{"step": 0, "train/compile_seconds": 2.0}, {"step": 5, "train/loss": 1.0},
                  {"step": 5, "train/compile_seconds": 1.5}, {"step": 9, "train/loss": 0.5}]
  log.write_text("".join(json.dumps(line) + "\n" for line in writer_lines))
  assert metrics.read_metrics(log)[-1]["step"] == 9
  assert compare._last_start(log) == 5  # resumed at step 5
  assert compare._last_start(tmp_path / "gone.jsonl") is None
  runs = [{"wall_seconds": 100.0, "trained_from_step": 0},
          {"wall_seconds": 30.0, "trained_from_step": 5},  # its last part only
          {"wall_seconds": 80.0, "trained_from_step": None},  # unknown
          {"wall_seconds": 120.0, "trained_from_step": 0}]
  assert compare._wall_mean(runs) == 110.0
  assert compare._wall_mean(runs[1:3]) is None


def test_a_stop_signal_checkpoints_the_run_in_training_and_the_rerun_resumes_it(tmp_path):
  """A study runs for hours on machines that get preempted: SIGTERM stops it as it stops
  launch.py, at a step with its checkpoint, and the same command goes on from there."""
  out = tmp_path / "study"
  command = [sys.executable, "-m", "benchmarks.compare", *TINY, "--models=cnn",
             "--steps=60", f"--out={out}"]
  run, log = out / "runs" / "cnn" / "seed0", tmp_path / "study.log"
  proc = start(command, log)
  deadline = time.monotonic() + 240
  while not any("train/loss" in line for line in _lines(run / "metrics.jsonl")):
    assert proc.poll() is None, log.read_text()[-3000:]
    assert time.monotonic() < deadline, "no training line"
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]
  output = log.read_text()
  stopped = re.fullmatch(r"stopped by SIGTERM at step (\d+), its checkpoint saved; re-run "
                         r"the same command to continue", output.strip().splitlines()[-1])
  assert stopped, output[-3000:]
  step = int(stopped.group(1))
  assert 25 <= step < 60 and (run / "checkpoints" / str(step)).is_dir()
  assert not (run / "result.json").exists()
  assert compare.main(command[3:]) == 0
  result = first_run(out)
  assert result["trained_from_step"] == step and result["curve"][-1]["step"] == 60


def _lines(path):
  try:
    return path.read_text().splitlines()
  except FileNotFoundError:
    return []
