"""launch.py as users run it: smoke configs end to end, resume, and bad input (exit 2)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from rir_jax import metrics

REPO = pathlib.Path(__file__).resolve().parent.parent


def launch(*args, timeout=300):
  # Two devices: every config runs sharded, as on a GPU box, without eight fake devices
  # sharing two cores (there, RiR's steps ran 5x slower than on one device). Eight devices
  # are tested where layouts are the point (test_train, test_uneven_batch, test_layouts).
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return subprocess.run([sys.executable, str(REPO / "launch.py"), *map(str, args)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mnist_args(shared_data, prepared_data_dir):
  """Real MNIST, prepared once for the session."""
  return [f"--config.data.manual_dir={shared_data / 'mnist'}",
          f"--config.data.data_dir={prepared_data_dir}", "--jax_cache_dir="]


@pytest.mark.slow
def test_cnn_mnist_smoke_writes_the_workdir_contract(mnist_args, tmp_path):
  workdir = tmp_path / "run"
  result = launch("--config=configs/mnist.py:model=cnn,smoke", f"--workdir={workdir}", *mnist_args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "final eval accuracy" in result.stdout
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["name"] == "cnn" and config["num_train_steps"] == 12
  lines = metrics.read_metrics(workdir / "metrics.jsonl")
  assert all("step" in line for line in lines)
  train = [l for l in lines if "train/loss" in l]
  evals = [l for l in lines if "eval/accuracy" in l]
  for key in ("train/accuracy", "train/images_per_sec", "train/learning_rate"):
    assert key in train[0]
  assert evals[-1]["step"] == 12 and evals[-1]["eval/examples"] == 10000
  assert 0.0 <= evals[-1]["eval/accuracy"] <= 1.0
  assert train[-1]["train/loss"] < train[0]["train/loss"]  # 12 real steps already learn
  assert any(l.get("train/compile_seconds", 0) > 0 for l in lines)
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert (workdir / "checkpoints" / "12").is_dir()

  again = launch("--config=configs/mnist.py:model=cnn,smoke", f"--workdir={workdir}", *mnist_args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resuming at step 12" in again.stderr
  assert metrics.read_metrics(workdir / "metrics.jsonl")[-1]["step"] == 12


@pytest.mark.slow
@pytest.mark.parametrize("model", ["rir", "resnet"])
def test_mnist_smoke_configs_run(model, mnist_args, tmp_path):
  result = launch(f"--config=configs/mnist.py:model={model},smoke", f"--workdir={tmp_path}",
                  *mnist_args)
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rir_cifar.py:smoke", "cifar.py:model=resnet,smoke",
                                  "cifar.py:model=cnn,smoke"])
def test_cifar_smoke_configs_run(name, tmp_path):
  result = launch(f"--config=configs/{name}", f"--workdir={tmp_path}", "--jax_cache_dir=")
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((tmp_path / "config.json").read_text())["data"]["name"] == "synthetic"
