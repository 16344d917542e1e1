"""Every model argument is a --config.model.* key on every config; old workdirs still resume."""
import ast
import importlib
import json
import logging
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from rir_jax import model_card, models, renamed, trainer, workdir

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py") if not p.name.startswith("_"))
CONFIGS += ["mnist:model=cnn", "mnist:model=resnet", "cifar:model=cnn"]  # the other models


def _parse(config_name: str, *overrides: str):
  """configs/NAME.py[:VARIANT] as launch.py resolves it: locked, so an unknown key raises."""
  name, _, variant = config_name.partition(":")
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config(variant or None) if name != "default" else module.get_config()
  config.lock()
  for override in overrides:
    key, value = override.removeprefix("--config.").split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    setattr(node, leaf, ast.literal_eval(value) if value[0] in "(0123456789TF" else value)
  return config


@pytest.mark.parametrize("config_name", CONFIGS)
def test_every_config_holds_all_its_model_arguments(config_name):
  model = _parse(config_name).model
  expected = {"name", *models.model_defaults(model.name)}
  assert set(model.keys()) == expected
  assert not expected & set(models.TRAINING_ARGUMENTS)  # dtype, kernels stay top-level


def test_model_flags_reach_the_model():
  config = _parse("rir_cifar:smoke", "--config.model.single_conv=True",
                  "--config.model.shortcut=zero_pad")
  model = trainer.make_model(config, num_classes=10)
  assert (model.single_conv, model.shortcut) == (True, "zero_pad")
  config = _parse("mnist:model=cnn", "--config.model.widths=(4, 8)")
  assert tuple(trainer.make_model(config, num_classes=10).widths) == (4, 8)
  config = _parse("mnist:model=resnet", "--config.model.shortcut=projection")
  assert trainer.make_model(config, num_classes=10).shortcut == "projection"


def test_another_models_name_keeps_working_without_its_keys():
  """The CNN config's own keys at their defaults do not stop --config.model.name=resnet."""
  config = _parse("mnist:model=cnn", "--config.model.name=resnet")
  assert isinstance(trainer.make_model(config, num_classes=10), models.ResNet)
  config = _parse("mnist:model=cnn", "--config.model.name=resnet", "--config.model.widths=(4, 8)")
  with pytest.raises(TypeError, match="widths"):
    trainer.make_model(config, num_classes=10)


def test_a_key_of_another_model_is_one_line_exit_2(tmp_path):
  result = subprocess.run(
      [sys.executable, "launch.py", "--config=configs/mnist.py:model=cnn,smoke",
       f"--workdir={tmp_path / 'w'}", "--config.model.single_conv=True",
       "--config.model.convs_per_stage=2"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().count("\n") == 0 and "single_conv" in result.stderr
  assert not (tmp_path / "w").exists()


def test_workdir_from_before_resumes_unless_a_model_key_changed(tmp_path):
  """config.json written when configs held only the keys they changed."""
  config = _parse("mnist:model=cnn,smoke")
  saved = workdir.config_json(config)
  saved["model"] = {"name": "cnn"}
  for key in ("validation_examples", "validation_seed"):
    del saved["data"][key]
  for key in ("init_from", "init_batch_stats", "init_new_head"):
    del saved[key]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  workdir.check(tmp_path, config)  # the same run: resumes
  changed = _parse("mnist:model=cnn,smoke", "--config.model.convs_per_stage=2")
  with pytest.raises(workdir.WorkdirError, match="convs_per_stage"):
    workdir.check(tmp_path, changed)
  # A config file that names only some of its model's keys resumes its own workdir too.
  partial = _parse("mnist:model=cnn,smoke")
  partial.unlock()
  partial.model = ml_collections.ConfigDict({"name": "cnn", "convs_per_stage": 6})
  (tmp_path / "config.json").write_text(json.dumps(workdir.config_json(config)))
  workdir.check(tmp_path, partial)


def test_conv_impl_reads_as_kernels_with_a_note(caplog):
  """The old key and its values, on the command line and in a config file."""
  with caplog.at_level(logging.WARNING):
    assert renamed.flags(["--config.conv_impl=onednn", "--workdir=w"]) == [
        "--config.kernels=cpu_library", "--workdir=w"]
  assert caplog.text.count("\n") == 1 and "conv_impl=onednn is deprecated" in caplog.text
  config = _parse("mnist:model=cnn,smoke")
  with config.unlocked():
    config.conv_impl = "xla"  # as a config file of before sets it
  new = renamed.config(config)
  assert new.kernels == "xla" and "conv_impl" not in new and config.kernels == "auto"
  assert renamed.config(new) is new
  new.kernels = "onednn"  # the old value under the new key
  assert renamed.config(new).kernels == "cpu_library"
  assert model_card.trained_kernels({"conv_impl": "onednn"}) == "cpu_library"


def test_workdir_from_before_kernels_resumes(tmp_path):
  """config.json (or a study's result.json) written when `kernels` was `conv_impl`."""
  config = _parse("mnist:model=cnn,smoke")
  saved = workdir.config_json(config)
  saved["conv_impl"] = saved.pop("kernels")
  (tmp_path / "config.json").write_text(json.dumps(saved))
  workdir.check(tmp_path, config)  # the same run: resumes
  assert workdir.config_differences(saved, config) == []
  saved["conv_impl"] = "onednn"
  assert workdir.saved_kernels(saved) == "cpu_library"
