"""benchmarks/time_to_accuracy.py on the tiny config and synthetic images: seconds."""
import json

import pytest

from benchmarks import time_to_accuracy
from rir_jax import checks

# 625 steps of 16 make an epoch of the 10,000 synthetic images: an eval every 4 steps.
EVERY_4_STEPS = str(4 / 625)


def _run(tiny, out, target: float, seeds: int) -> dict:
  code = time_to_accuracy.main([f"--config={tiny}", f"--target={target}", f"--seeds={seeds}",
                                f"--eval_every_epochs={EVERY_4_STEPS}", f"--out={out}",
                                "--config.num_train_steps=12", "--config.optimizer.momentum=0.5"])
  assert code == 0
  return json.loads((out / "results.json").read_text())


def test_a_reached_target_ends_each_seed_at_its_first_eval(tiny, tmp_path, capsys):
  results = _run(tiny, tmp_path, target=0.01, seeds=2)
  assert results["overrides"] == ["num_train_steps=12", "optimizer.momentum=0.5"]
  assert results["config"]["optimizer"]["momentum"] == 0.5
  assert [run["seed"] for run in results["runs"]] == [0, 1]
  for run in results["runs"]:
    assert run["reached"] and run["step"] == 4 and run["epoch"] == pytest.approx(4 / 625)
    assert run["accuracy"] >= 0.01 and [step for step, _ in run["evals"]] == [4]
    assert run["wall_seconds"] > run["compile_seconds"] > 0
  summary = results["summary"]
  assert summary["reached"] == 2 and summary["median_epochs_to_target"] == pytest.approx(4 / 625)
  assert summary["median_seconds_to_target"] == summary["median_wall_seconds"]
  printed = capsys.readouterr().out
  assert "| median | 2/2 |" in printed
  markdown = (tmp_path / "results.md").read_text()
  assert printed.strip().splitlines()[-1] in markdown
  raw = markdown.split("```")[1].strip().splitlines()  # one JSON line per seed
  assert [json.loads(line)["seed"] for line in raw] == [0, 1]


def test_a_missed_target_runs_to_the_end_and_has_no_time(tiny, tmp_path, capsys):
  results = _run(tiny, tmp_path, target=1.0, seeds=1)
  (run,) = results["runs"]
  assert not run["reached"] and run["step"] is None
  assert [step for step, _ in run["evals"]] == [4, 8, 12]
  assert results["summary"]["median_seconds_to_target"] is None
  assert "| median | 0/1 |" in capsys.readouterr().out


def test_overrides_must_be_config_keys(tiny, tmp_path):
  with pytest.raises(SystemExit):
    time_to_accuracy.main([f"--config={tiny}", "--target=0.5", "--seeds=1", "--bogus=1"])


@pytest.mark.parametrize("preset", sorted(time_to_accuracy.PRESETS))
def test_every_preset_is_a_valid_recipe_and_target(preset, monkeypatch):
  monkeypatch.chdir(time_to_accuracy.REPO)  # presets name their config files from the root
  spec = time_to_accuracy.PRESETS[preset]
  config = time_to_accuracy.seed_config(time_to_accuracy.load_recipe(spec.config, []), 0,
                                        spec.target, None)
  checks.validate(config, device_count=1, process_count=1)
  assert config.data.name == preset and config.stop_at_accuracy == spec.target
