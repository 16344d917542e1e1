"""--config.init_from: a run starts from another run's or an export's weights."""
import concurrent.futures
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from rir_jax import checks, loading, models, warm_start
from trained_helpers import REPO, mnist_flags, run_module, shared_run, train


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
  return shared_run(tmp_path_factory, shared_data)


@pytest.fixture(scope="module")
def source(run):
  return loading.load_trained(run, "best")


def _settings(**changes):
  return ml_collections.ConfigDict({"init_batch_stats": True, "init_new_head": False, **changes})


def _fresh(num_classes, widths=(8, 16)):
  """A freshly initialised model like the run's, with `num_classes` logits."""
  model = models.get_model("cnn", num_classes=num_classes, widths=widths, convs_per_stage=1)
  return jax.device_get(model.init(jax.random.PRNGKey(1), np.zeros((1, 28, 28, 1)), train=False))


def test_every_parameter_and_statistic_is_taken(source):
  merged = warm_start.merge(_fresh(10), source, _settings(), num_classes=10)
  for got, want in zip(jax.tree.leaves(merged), jax.tree.leaves(source.variables), strict=True):
    np.testing.assert_array_equal(got, want)
  fresh = _fresh(10)
  kept = warm_start.merge(fresh, source, _settings(init_batch_stats=False), num_classes=10)
  for got, want in zip(jax.tree.leaves(kept["batch_stats"]), jax.tree.leaves(fresh["batch_stats"])):
    np.testing.assert_array_equal(got, want)


def test_a_new_head_for_another_class_count_only_when_asked(source):
  fresh = _fresh(3)
  with pytest.raises(checks.ConfigError, match=r"head/bias .*init_new_head"):
    warm_start.merge(fresh, source, _settings(), num_classes=3)
  merged = warm_start.merge(fresh, source, _settings(init_new_head=True), num_classes=3)
  np.testing.assert_array_equal(merged["params"]["head"]["kernel"],
                                fresh["params"]["head"]["kernel"])  # re-initialised
  np.testing.assert_array_equal(merged["params"]["Conv_0"]["kernel"],
                                source.variables["params"]["Conv_0"]["kernel"])


def test_any_other_mismatch_names_the_parameter(source):
  shapes = r"BatchNorm_0/bias has shape \(8,\) there and \(4,\) here"
  with pytest.raises(checks.ConfigError, match=shapes):
    warm_start.merge(_fresh(10, widths=(4, 16)), source, _settings(init_new_head=True),
                     num_classes=10)
  with pytest.raises(checks.ConfigError, match=r"has no params (BatchNorm|Conv)_3"):
    warm_start.merge(_fresh(10, widths=(8, 16, 32)), source, _settings(), num_classes=10)


def test_a_run_starts_from_the_exported_weights(run, shared_data, tmp_path):
  exported = tmp_path / "start.msgpack"
  assert run_module("export", f"--workdir={run}", f"--out={exported}").returncode == 0
  # A learning rate too small to move anything: the end is where it started.
  workdir = train(tmp_path / "warm", shared_data, f"--config.init_from={exported}",
                  "--config.optimizer.learning_rate=1e-12", "--config.num_train_steps=4",
                  "--config.data.validation_examples=0")
  end = loading.load_trained(workdir, "last").variables["params"]
  for got, want in zip(jax.tree.leaves(end), jax.tree.leaves(loading.load(exported)[1]["params"]),
                       strict=True):
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_bad_init_from_is_one_line_exit_2(run, shared_data, tmp_path):
  cases = [
      ([f"--config.init_from={tmp_path / 'missing'}"], "does not exist"),
      # (a tuple flag given twice would be joined: another key changes the model here)
      ([f"--config.init_from={run}", "--config.model.convs_per_stage=2"],
       "BatchNorm_2/bias has shape (16,)"),
  ]
  def launch(extra):
    return subprocess.run([sys.executable, "launch.py", f"--workdir={tmp_path / 'w'}",
                           "--jax_cache_dir=", *mnist_flags(shared_data), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    results = list(pool.map(launch, [args for args, _ in cases]))
  for (_, phrase), result in zip(cases, results):
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "init_from" in errors[0] and phrase in errors[0], errors[0]
  assert not (tmp_path / "w").exists()
