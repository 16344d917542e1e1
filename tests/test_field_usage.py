"""Field mistakes that must cost one line and exit 2, with the workdir untouched.

Values that pass a type check yet cannot run (inf epochs, a negative seed, a batch bigger
than memory), broken workdirs, a missing accelerator, a busy workdir, a one-class image
folder, no network: each is refused before anything is written.
"""
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from launch_helpers import REPO, launch_command, start, write_tiny_config

pytestmark = pytest.mark.slow  # every case is a fresh Python process


def _image_tree(root: pathlib.Path, classes=("a", "b"), per_class=3) -> pathlib.Path:
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for label in classes:
      folder = root / split / label
      folder.mkdir(parents=True)
      for i in range(per_class):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
  return root


def _cases(tmp: pathlib.Path, tiny: pathlib.Path) -> dict[str, tuple[list[str], dict, str]]:
  """name -> (launch.py arguments, environment, a phrase the error line must contain)."""
  work = lambda name: tmp / "w" / name  # noqa: E731
  dict_config = tmp / "dict_config.py"
  dict_config.write_text("def get_config():\n  return {'seed': 1}\n")
  bare_config = tmp / "bare_config.py"
  bare_config.write_text("import ml_collections\n\ndef get_config():\n"
                         "  return ml_collections.ConfigDict({'seed': 1})\n")
  dangling = tmp / "dangling"
  dangling.symlink_to(tmp / "nowhere")
  tb_file, ckpt_file, cut_json, dir_json, no_json = (
      tmp / "runs" / n for n in ("tb_file", "ckpt_file", "cut_json", "dir_json", "no_json"))
  for folder in (tb_file, ckpt_file, cut_json, dir_json):
    folder.mkdir(parents=True)
  (no_json / "checkpoints" / "6").mkdir(parents=True)  # copied without its config.json
  (tb_file / "tensorboard").write_text("")
  (ckpt_file / "checkpoints").write_text("")
  (cut_json / "config.json").write_text('{"seed": 0, "mod')
  (dir_json / "config.json").mkdir()
  one_class = _image_tree(tmp / "one_class", classes=("only",))
  corrupt = _image_tree(tmp / "corrupt_image")
  (corrupt / "train" / "b" / "2.png").write_bytes(b"not a png")
  tiny_args = lambda workdir, *flags: launch_command(tiny, workdir, *flags)[1:]  # noqa: E731
  return {
      "negative_seed": (tiny_args(work("a"), "--config.seed=-1"), {}, "seed"),
      "inf_epochs": (tiny_args(work("b"), "--config.num_train_steps=-1",
                               "--config.num_epochs=inf"), {}, "num_epochs"),
      "huge_epochs": (tiny_args(work("c"), "--config.num_train_steps=-1",
                                "--config.num_epochs=1e30"), {}, "num_epochs"),
      "inf_eval_every": (tiny_args(work("d"), "--config.eval_every_steps=-1",
                                   "--config.eval_every_epochs=inf"), {}, "eval_every_epochs"),
      "inf_warmup": (tiny_args(work("e"), "--config.schedule.warmup_epochs=inf"), {},
                     "warmup_epochs"),
      "huge_boundary": (tiny_args(work("f"), "--config.schedule.name=piecewise",
                                  "--config.schedule.boundaries_epochs=(1e30,)"), {},
                        "boundaries_epochs"),
      "inf_learning_rate": (tiny_args(work("g"), "--config.optimizer.learning_rate=inf"), {},
                            "learning_rate"),
      "eval_batch_beyond_memory": (tiny_args(work("h"), "--config.eval_batch_size=4000000"), {},
                                   "eval_batch_size"),
      "train_batch_beyond_memory": (tiny_args(work("i"), "--config.batch_size=9600",
                                              "--config.model.widths=(4096,4096)"), {},
                                    "batch_size"),
      "config_returns_a_dict": (launch_command(dict_config, work("j"))[1:], {}, "dict"),
      "config_without_defaults": (launch_command(bare_config, work("k"))[1:], {}, "default.py"),
      "dangling_symlink_workdir": (tiny_args(dangling), {}, "does not exist"),
      "tensorboard_is_a_file": (tiny_args(tb_file), {}, "not a folder"),
      "checkpoints_is_a_file": (tiny_args(ckpt_file), {}, "not a folder"),
      "truncated_config_json": (tiny_args(cut_json), {}, "damaged"),
      "config_json_is_a_folder": (tiny_args(dir_json), {}, "not a file"),
      "checkpoints_without_config_json": (tiny_args(no_json), {}, "but no config.json"),
      "cuda_without_gpu": (tiny_args(work("l")), {"JAX_PLATFORMS": "cuda"}, "JAX_PLATFORMS"),
      "one_class_image_folder": (tiny_args(work("m"), "--config.data.name=image_folder",
                                           f"--config.data.manual_dir={one_class}",
                                           f"--config.data.data_dir={tmp / 'tfds'}",
                                           "--config.batch_size=8", "--config.eval_batch_size=8"),
                                 {}, "two class"),
      "corrupt_image_in_folder": (tiny_args(work("o"), "--config.data.name=image_folder",
                                            f"--config.data.manual_dir={corrupt}",
                                            f"--config.data.data_dir={tmp / 'tfds'}",
                                            "--config.batch_size=8",
                                            "--config.eval_batch_size=8"),
                                  {}, "not a readable image"),
      "offline_download": (tiny_args(work("n"), "--config.data.name=mnist",
                                     f"--config.data.data_dir={tmp / 'empty_tfds'}"), {},
                           "could not download mnist"),
  }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("field_usage")
  cases = _cases(tmp, write_tiny_config(tmp))
  snapshot = lambda: {str(p): p.stat().st_mtime_ns if p.exists() else 0  # noqa: E731
                      for p in tmp.rglob("*") if "tfds" not in str(p)}
  before = snapshot()

  def run(case):
    args, env, _ = case
    began = time.monotonic()
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
    return result, time.monotonic() - began

  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    results = dict(zip(cases, pool.map(run, cases.values())))
  after = snapshot()
  changed = sorted(p for p in after if before.get(p) != after[p] and "tfds" not in p)
  return cases, results, changed


CASE_NAMES = [
    "negative_seed", "inf_epochs", "huge_epochs", "inf_eval_every", "inf_warmup",
    "huge_boundary", "inf_learning_rate", "eval_batch_beyond_memory",
    "train_batch_beyond_memory", "config_returns_a_dict", "config_without_defaults",
    "dangling_symlink_workdir", "tensorboard_is_a_file", "checkpoints_is_a_file",
    "truncated_config_json", "config_json_is_a_folder", "checkpoints_without_config_json",
    "cuda_without_gpu",
    "one_class_image_folder", "corrupt_image_in_folder", "offline_download",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_field_mistake_exits_2_with_one_line(outcomes, name):
  cases, results, _ = outcomes
  result, _ = results[name]
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, result.stderr[-2000:]
  assert cases[name][2] in errors[0], errors[0]
  # Nothing else on stderr but log lines (no progress bars before the error).
  others = [line for line in result.stderr.splitlines()
            if line.strip() and not line.startswith(("error: ", "I", "W"))]
  assert others == [], others


def test_offline_download_fails_within_10_seconds_of_start(outcomes):
  _, results, _ = outcomes
  result, seconds = results["offline_download"]
  assert result.returncode == 2
  # The process's own start (imports, JAX) is a few seconds on a busy 2-core machine.
  assert seconds < 30, seconds
  assert "no network" in result.stderr or "cannot connect" in result.stderr


def test_field_mistakes_never_touch_a_workdir(outcomes):
  cases, _, changed = outcomes
  assert set(cases) == set(CASE_NAMES)
  assert changed == []
  # A one-class image folder is refused before anything is prepared for it, too.


def test_a_second_run_on_a_busy_workdir_exits_2_naming_the_holder(tmp_path):
  tiny = write_tiny_config(tmp_path)
  workdir = tmp_path / "run"
  first = start(launch_command(tiny, workdir, "--config.num_train_steps=400"),
                tmp_path / "first.log")
  try:
    lock = workdir / "lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text()):
      assert first.poll() is None and time.monotonic() < deadline, \
          (tmp_path / "first.log").read_text()[-2000:]
      time.sleep(0.1)
    second = subprocess.run(launch_command(tiny, workdir, "--config.num_train_steps=400"),
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"pid {first.pid}" in errors[0], second.stderr[-2000:]
    assert first.poll() is None  # the holder trains on, undisturbed
  finally:
    first.kill()
    first.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
  tiny = write_tiny_config(tmp_path)
  workdir = tmp_path / "run"
  workdir.mkdir()
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  (workdir / "lock").write_text(f"pid {dead} on host {os.uname().nodename}\n")
  result = subprocess.run(launch_command(tiny, workdir, "--config.num_train_steps=2"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"taking over the lock of pid {dead} on host" in result.stderr
  assert json.loads((workdir / "config.json").read_text())["num_train_steps"] == 2


def test_a_run_resumes_with_its_data_moved_but_not_with_other_data():
  """Where the data lives (another disk, a bucket's mirror) and how often it checkpoints
  are not part of a run's config; which data it is stays part of it."""
  from configs import mnist
  from rir_jax import workdir as workdir_lib
  config = mnist.get_config("model=cnn")
  config.data.manual_dir = "../shared/data/mnist"
  saved = workdir_lib.config_json(config)
  config.data.manual_dir = "/mnt/copy/mnist"
  config.data.data_dir = "gs://bucket/tfds"
  assert workdir_lib.config_differences(saved, config) == []
  # A run preempted often resumes with more frequent checkpoints (its steps are the same).
  config.checkpoint_every_steps, config.keep_checkpoints = 50, 10
  assert workdir_lib.config_differences(saved, config) == []
  config.data.name = "fashion_mnist"
  assert workdir_lib.config_differences(saved, config) == [
      "data.name ('mnist' -> 'fashion_mnist')"]


# config.json as the project's first version wrote it (configs/default.py of 2026-11-25).
FIRST_CONFIG_JSON = {
    "seed": 0, "model": {"name": "rir"},
    "data": {"name": "cifar10", "data_dir": None, "manual_dir": None, "download": True},
    "batch_size": 128, "eval_batch_size": 1000, "num_epochs": 10.0, "num_train_steps": -1,
    "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": False,
                  "weight_decay": 0.0001, "weight_decay_type": "l2"},
    "schedule": {"name": "piecewise", "boundaries_epochs": [5.0, 8.0], "decay_factor": 0.1,
                 "warmup_epochs": 0.0},
    "label_smoothing": 0.0, "dtype": "float32", "log_every_steps": 50,
    "eval_every_epochs": 1.0, "eval_every_steps": -1, "checkpoint_every_steps": 500,
    "keep_checkpoints": 3, "nan_policy": "stop", "allow_config_change": False}


def test_a_workdir_of_the_first_version_resumes_where_its_config_is_kept():
  """Every key added since counts as the value its absence stood for: a new key without
  its entry in workdir._ADDED_KEYS (or a model default) fails here, as it would refuse
  every older workdir's resume."""
  from configs import default
  from rir_jax import workdir as workdir_lib
  config = default.get_config()
  assert workdir_lib.config_differences(FIRST_CONFIG_JSON, config) == []
  # It trained on XLA's convolutions: a resume keeps them (rir_jax.kernels.record).
  assert workdir_lib.saved_kernels(FIRST_CONFIG_JSON) == "xla"
