"""Every user mistake: exit code 2, one line on stderr saying what and how, workdir untouched."""
import concurrent.futures
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every case is a fresh Python process

REPO = pathlib.Path(__file__).resolve().parent.parent
SMOKE = "--config=configs/mnist.py:model=cnn,smoke"


def _cases(tmp: pathlib.Path, shared_data: pathlib.Path) -> dict[str, tuple[list[str], str]]:
  """name -> (arguments after launch.py, a phrase the error line must contain)."""
  raising = tmp / "raising_config.py"
  raising.write_text("def get_config():\n  raise RuntimeError('broken on purpose')\n")
  corrupt = tmp / "corrupt_mnist"
  shutil.copytree(shared_data / "mnist", corrupt)
  with open(corrupt / "train-images-idx3-ubyte", "r+b") as f:
    f.truncate(1000)
  a_file = tmp / "a_file"
  a_file.write_text("not a folder")
  other = tmp / "other_run"
  other.mkdir()
  (other / "config.json").write_text(json.dumps({"seed": 123}))
  busy = socket.socket()
  busy.bind(("127.0.0.1", 0))
  busy.listen()
  _cases.keep_alive = busy  # held open while the cases run
  port = busy.getsockname()[1]
  mnist = f"--config.data.manual_dir={shared_data / 'mnist'}"
  work = lambda name: f"--workdir={tmp / 'w' / name}"
  return {
      "unknown_key": ([SMOKE, work("a"), "--config.nope=1"], "nope"),
      "wrong_type": ([SMOKE, work("b"), "--config.batch_size=abc"], "batch_size"),
      "zero_batch": ([SMOKE, work("c"), "--config.batch_size=0"], "batch_size"),
      "negative_batch": ([SMOKE, work("d"), "--config.batch_size=-8"], "batch_size"),
      "zero_epochs": ([SMOKE, work("e"), "--config.num_train_steps=-1",
                       "--config.num_epochs=0"], "num_epochs"),
      "unknown_model": ([SMOKE, work("f"), "--config.model.name=vgg"], "vgg"),
      "unknown_dataset": ([SMOKE, work("g"), "--config.data.name=imagenet"], "imagenet"),
      "unknown_optimizer": ([SMOKE, work("h"), "--config.optimizer.name=lion"], "lion"),
      "unknown_schedule": ([SMOKE, work("i"), "--config.schedule.name=step"], "step"),
      "unknown_dtype": ([SMOKE, work("j"), "--config.dtype=float16"], "float16"),
      "negative_lr": ([SMOKE, work("m"), "--config.optimizer.learning_rate=-0.1"],
                      "learning_rate"),
      "momentum_above_one": ([SMOKE, work("n"), "--config.optimizer.momentum=1.5"], "momentum"),
      "missing_config_file": (["--config=configs/nope.py", work("o")], "nope.py"),
      "raising_config_file": ([f"--config={raising}", work("p")], "broken on purpose"),
      "unknown_variant": (["--config=configs/mnist.py:model=cnn,huge", work("q")], "huge"),
      "missing_workdir_flag": ([SMOKE], "--workdir"),
      "positional_argument": ([SMOKE, work("r"), "extra"], "extra"),
      "missing_data_offline": ([SMOKE, work("s"), f"--config.data.manual_dir={tmp / 'none'}",
                                f"--config.data.data_dir={tmp / 'empty_tfds'}"], "none"),
      "corrupt_data": ([SMOKE, work("t"), f"--config.data.manual_dir={corrupt}",
                        f"--config.data.data_dir={tmp / 'tfds_corrupt'}"], "train-images"),
      "workdir_is_a_file": ([SMOKE, f"--workdir={a_file}", mnist], "is a file"),
      "workdir_of_another_config": ([SMOKE, f"--workdir={other}", mnist], "another config"),
      "unwritable_workdir": ([SMOKE, "--workdir=/proc/rir_jax_run", mnist], "write"),
      "bad_model_depth": (["--config=configs/mnist.py:model=resnet,smoke", work("u"),
                           "--config.model.depth=21", mnist], "depth"),
      "unknown_conv_impl": ([SMOKE, work("w"), "--config.conv_impl=mkl"], "mkl"),
      "coordinator_port_busy": ([SMOKE, work("v"), f"--coordinator_address=127.0.0.1:{port}",
                                 "--num_processes=2", "--process_id=0"], "port"),
  }


@pytest.fixture(scope="module")
def outcomes(shared_data, tmp_path_factory):
  """Runs every case (a few at a time: each is a fresh Python process)."""
  tmp = tmp_path_factory.mktemp("bad_input")
  cases = _cases(tmp, shared_data)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  snapshot = lambda: sorted(str(p) for p in tmp.rglob("*"))
  before = snapshot()

  def run(args):
    return subprocess.run([sys.executable, str(REPO / "launch.py"), *args, "--jax_cache_dir="],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = dict(zip(cases, pool.map(run, [args for args, _ in cases.values()])))
  created = sorted(set(snapshot()) - set(before))
  return cases, results, created


CASE_NAMES = [
    "unknown_key", "wrong_type", "zero_batch", "negative_batch", "zero_epochs",
    "unknown_model", "unknown_dataset", "unknown_optimizer", "unknown_schedule",
    "unknown_dtype", "negative_lr",
    "momentum_above_one", "missing_config_file", "raising_config_file", "unknown_variant",
    "missing_workdir_flag", "positional_argument", "missing_data_offline", "corrupt_data",
    "workdir_is_a_file", "workdir_of_another_config", "unwritable_workdir", "bad_model_depth",
    "unknown_conv_impl", "coordinator_port_busy",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_exits_2_with_one_line(outcomes, name):
  cases, results, _ = outcomes
  result = results[name]
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, result.stderr[-2000:]
  assert cases[name][1] in errors[0], errors[0]


def test_bad_input_never_touches_a_workdir(outcomes):
  cases, _, created = outcomes
  assert set(cases) == set(CASE_NAMES)
  workdir_files = [p for p in created if "/w/" in p or "other_run" in p]
  assert workdir_files == []
