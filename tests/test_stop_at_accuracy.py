"""config.stop_at_accuracy: a run ends at its first eval that reaches the target, else at its end."""
import json

import pytest

from configs import default
from launch_helpers import tiny_config
from rir_jax import checkpoint, checks, loop, metrics, workdir
from rir_jax.data import validation


def _evals(workdir) -> list[tuple[int, float]]:
  return [(line["step"], line["eval/accuracy"])
          for line in metrics.read_metrics(workdir / "metrics.jsonl") if "eval/accuracy" in line]


@pytest.fixture(scope="module")
def full_run(tiny, synthetic, tmp_path_factory):
  """12 steps, evals at 4, 8 and 12, no target: the accuracies a target is set against."""
  workdir = tmp_path_factory.mktemp("full")
  loop.train_and_evaluate(tiny_config(tiny, num_train_steps=12), workdir, synthetic)
  return _evals(workdir)


def test_stops_at_the_first_eval_that_reaches_the_target(tiny, synthetic, full_run, tmp_path):
  # The best of the evals before the last: reached first at a step before the end.
  target = max(accuracy for _, accuracy in full_run[:-1])
  stop = next(step for step, accuracy in full_run if accuracy >= target)
  config = tiny_config(tiny, num_train_steps=12, checkpoint_every_steps=100,
                       stop_at_accuracy=target)
  final = loop.train_and_evaluate(config, tmp_path, synthetic)
  assert _evals(tmp_path) == [line for line in full_run if line[0] <= stop]
  assert final["eval/accuracy"] == _evals(tmp_path)[-1][1]
  assert checkpoint.newest_step(tmp_path / "checkpoints") == stop
  assert max(line["step"] for line in metrics.read_metrics(tmp_path / "metrics.jsonl")) == stop
  # A re-run finds the run finished, as any finished run: no step more.
  again = loop.train_and_evaluate(config, tmp_path, synthetic)
  assert again["eval/accuracy"] == final["eval/accuracy"]
  assert checkpoint.newest_step(tmp_path / "checkpoints") == stop


def test_runs_to_the_end_when_no_eval_reaches_the_target(tiny, synthetic, full_run, tmp_path):
  assert max(accuracy for _, accuracy in full_run) < 1.0
  config = tiny_config(tiny, num_train_steps=12, checkpoint_every_steps=100, stop_at_accuracy=1.0)
  final = loop.train_and_evaluate(config, tmp_path, synthetic)
  assert _evals(tmp_path) == full_run
  assert final["eval/accuracy"] == full_run[-1][1]
  assert checkpoint.newest_step(tmp_path / "checkpoints") == 12


def test_with_a_validation_split_its_evals_decide_and_the_test_split_closes(tiny, tmp_path):
  config = tiny_config(tiny, num_train_steps=12, checkpoint_every_steps=100,
                       stop_at_accuracy=0.01)
  config.data.validation_examples = 256
  final = loop.train_and_evaluate(config, tmp_path, validation.load_for_config(config.data))
  (line,) = [line for line in metrics.read_metrics(tmp_path / "metrics.jsonl")
             if "val/accuracy" in line]
  assert line["step"] == 4 and line["val/accuracy"] >= 0.01
  assert final["eval/accuracy"] == line["eval/accuracy"]  # the test split, once, at the end
  assert checkpoint.newest_step(tmp_path / "checkpoints") == 4


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_target_outside_zero_to_one_is_a_config_error(value):
  config = default.get_config()
  config.stop_at_accuracy = value
  with pytest.raises(checks.ConfigError, match="stop_at_accuracy"):
    checks.validate(config, device_count=1, process_count=1)


def test_a_workdir_from_before_the_key_resumes_while_it_stays_off(tmp_path):
  config = default.get_config()
  saved = workdir.config_json(config)
  del saved["stop_at_accuracy"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  workdir.check(tmp_path, config)
  config.stop_at_accuracy = 0.9
  with pytest.raises(workdir.WorkdirError, match="stop_at_accuracy"):
    workdir.check(tmp_path, config)
