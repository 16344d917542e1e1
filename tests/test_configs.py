"""configs/mnist.py and configs/cifar.py: each argument set resolves to the config of the
per-model file it replaced (frozen below), and a wrong argument is one line, exit 2."""
import re
import subprocess
import sys

import pytest

from configs import cifar, default, mnist, rir_cifar
from launch_helpers import REPO

# What the removed files resolved to (commit b9fc3c4), beyond configs/default.py's values;
# every model took its registry defaults (ResNet's depth: 20).
MNIST = {"data.name": "mnist", "batch_size": 128, "eval_batch_size": 1000, "num_epochs": 5.0,
         "num_train_steps": -1, "optimizer.name": "sgd", "optimizer.learning_rate": 0.05,
         "optimizer.momentum": 0.9, "optimizer.nesterov": False,
         "optimizer.weight_decay": 5e-4, "optimizer.weight_decay_type": "l2",
         "schedule.name": "cosine", "schedule.boundaries_epochs": (),
         "schedule.decay_factor": 0.1, "schedule.warmup_epochs": 0.0,
         "checkpoint_every_steps": 1000, "dtype": "float32"}
HE = {**MNIST, "data.name": "cifar10", "num_epochs": 164.0, "optimizer.learning_rate": 0.1,
      "optimizer.weight_decay": 1e-4, "schedule.name": "piecewise",
      "schedule.boundaries_epochs": (82.0, 123.0), "checkpoint_every_steps": 2000}
PAPER = {**HE, "batch_size": 500, "num_epochs": 82.0, "schedule.boundaries_epochs": (42.0, 62.0),
         "checkpoint_every_steps": 1000}
SMOKE = {"batch_size": 32, "eval_batch_size": 256, "num_train_steps": 12,
         "schedule.boundaries_epochs": (), "log_every_steps": 4, "eval_every_steps": 12,
         "checkpoint_every_steps": 6}
SMOKE_CIFAR = {**SMOKE, "data.name": "synthetic"}
SMOKE_PAPER = {**SMOKE_CIFAR, "batch_size": 16, "eval_batch_size": 128, "num_train_steps": 4,
               "eval_every_steps": 4, "checkpoint_every_steps": 2}
OLD = {  # removed file[:variant] -> (its model, its values)
    "cnn_mnist": ("cnn", MNIST),
    "cnn_mnist:smoke": ("cnn", {**MNIST, **SMOKE}),
    "resnet_mnist": ("resnet", MNIST),
    "resnet_mnist:smoke": ("resnet", {**MNIST, **SMOKE}),
    "rir_mnist": ("rir", MNIST),
    "rir_mnist:smoke": ("rir", {**MNIST, **SMOKE}),
    "cnn_cifar": ("cnn", HE),
    "cnn_cifar:smoke": ("cnn", {**HE, **SMOKE_CIFAR}),
    "resnet_cifar": ("resnet", HE),
    "resnet_cifar:smoke": ("resnet", {**HE, **SMOKE_CIFAR}),
    "rir_cifar": ("rir_paper", PAPER),
    "rir_cifar:smoke": ("rir_paper", {**PAPER, **SMOKE_PAPER}),
}
NEW = {  # removed file[:variant] -> what replaces it
    "cnn_mnist": (mnist, "model=cnn"), "resnet_mnist": (mnist, "model=resnet"),
    "rir_mnist": (mnist, "model=rir"), "cnn_cifar": (cifar, "model=cnn"),
    "resnet_cifar": (cifar, "model=resnet"), "rir_cifar": (cifar, "model=rir"),
}


def flat(tree: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def old_config(name: str) -> dict:
  model, values = OLD[name]
  config = default.get_config()
  config.model = default.model_config(model)
  return flat(config.to_dict()) | values


@pytest.mark.parametrize("name", OLD)
def test_each_argument_set_resolves_to_the_removed_files_config(name):
  file, _, variant = name.partition(":")
  module, arg = NEW[file]
  config = module.get_config(f"{arg},{variant}")
  assert flat(config.to_dict()) == old_config(name)


def test_rir_cifar_is_cifar_with_model_rir():
  for variant in (None, "smoke", "dataset=cifar100,smoke"):
    expected = cifar.get_config(f"model=rir,{variant or ''}")
    assert rir_cifar.get_config(variant).to_dict() == expected.to_dict()
  assert flat(rir_cifar.get_config().to_dict()) == old_config("rir_cifar")


@pytest.mark.parametrize("module, dataset", [(mnist, "fashion_mnist"), (cifar, "cifar100"),
                                             (cifar, "cifar10_jpeg")])
def test_dataset_argument_is_the_data_name_flag(module, dataset):
  """dataset=X: what the removed files gave with --config.data.name=X."""
  expected = module.get_config("model=cnn")
  expected.data.name = dataset
  assert module.get_config(f"model=cnn,dataset={dataset}").to_dict() == expected.to_dict()


@pytest.mark.parametrize("arg, message", [
    ("model=vgg", "model=vgg; choose model=cnn|resnet|rir"),
    ("dataset=imagenet", "choose dataset=cifar10|cifar100|cifar10_jpeg"),
    ("huge", "unknown config argument 'huge'; choose from: model, dataset, smoke"),
])
def test_a_wrong_argument_raises_naming_the_choices(arg, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    cifar.get_config(arg)


@pytest.mark.parametrize("config, message", [
    ("configs/mnist.py:model=vgg", "choose model=cnn|resnet|rir"),
    ("configs/rir_cifar.py:model=cnn", "unknown config argument 'model'; choose from: dataset"),
])
def test_a_wrong_argument_is_one_line_exit_2(config, message, tmp_path):
  result = subprocess.run(
      [sys.executable, "launch.py", f"--config={config}", f"--workdir={tmp_path / 'w'}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
  assert not (tmp_path / "w").exists()
