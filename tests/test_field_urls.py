"""URLs of storage other than gs:// (s3://, https://, file://, hdfs://) wherever a path is
given: one line naming the URL and what to do, exit 2, nothing written. Read as local
paths they made a folder named `s3:` in the current directory and trained into it, or
reported a name the user never typed (`https:/host/cat.png`) missing.
"""
import concurrent.futures
import re
import subprocess
import sys

import pytest

import rir_jax
from launch_helpers import REPO, write_tiny_config
from rir_jax import loading, storage
from trained_helpers import assert_one_line_exit_2, run_module


@pytest.mark.parametrize("text", ["runs/rir1", "/tmp/a:b", "runs/x://y", "gs://bucket/run",
                                  "~/runs", "c:drive", ""])
def test_local_paths_and_gs_urls_are_taken(text):
  storage.check_supported(text)


@pytest.mark.parametrize("text, hint", [
    ("s3://bucket/run", "copy or mount it"),
    ("https://host/cat.png", "copy or mount it"),
    ("GS://bucket/run", "write gs:// in lower case"),
    ("file:///tmp/run", "give the path itself (/tmp/run)"),
])
def test_other_urls_are_refused_with_what_to_do(text, hint):
  with pytest.raises(storage.UnsupportedURL) as raised:
    storage.as_path(text)
  assert str(raised.value).startswith(f"{text}: ") and hint in str(raised.value)
  with pytest.raises(loading.LoadError, match=re.escape(text)):
    rir_jax.load(text)


def test_launch_refuses_them_before_writing_anything(tmp_path):
  config = write_tiny_config(tmp_path)
  workdir = tmp_path / "run"
  cases = [
      (["--workdir=s3://bucket/run"], "--workdir: s3://bucket/run: "),
      ([f"--workdir={workdir}", "--jax_cache_dir=hdfs://node/cache"], "--jax_cache_dir: hdfs://"),
      ([f"--workdir={workdir}", "--config.data.name=mnist",
        "--config.data.data_dir=https://host/data"], "--config.data.data_dir: https://host/data: "),
      ([f"--workdir={workdir}", "--config.data.name=mnist",
        "--config.data.manual_dir=file:///data/mnist"], "give the path itself (/data/mnist)"),
      ([f"--workdir={workdir}", "--config.init_from=s3://bucket/old"],
       "--config.init_from: s3://bucket/old: "),
  ]

  def launch(flags):  # from tmp_path: a URL read as a local path lands there
    return subprocess.run([sys.executable, str(REPO / "launch.py"), f"--config={config}", *flags],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)

  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    results = list(pool.map(launch, [flags for flags, _ in cases]))
  for (_, phrase), result in zip(cases, results):
    assert_one_line_exit_2(result, phrase)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.py"]


def test_model_commands_refuse_them_before_reading_anything(tmp_path):
  cases = [
      ("predict", [f"--workdir={tmp_path}", "https://host/cat.png"],
       "IMAGE_OR_FOLDER: https://host/cat.png: "),
      ("evaluate", ["--workdir=s3://bucket/run"], "--workdir: s3://bucket/run: "),
      ("export", [f"--workdir={tmp_path}", "--out=az://container/model.msgpack"], "--out: az://"),
      ("data.prepare", ["mnist", "--data_dir=s3://bucket/data"], "data_dir s3://bucket/data: "),
  ]
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(lambda case: run_module(case[0], *case[1]), cases))
  for (_, _, phrase), result in zip(cases, results):
    assert_one_line_exit_2(result, phrase)
  assert not any(REPO.glob("*:"))  # no folder named after a scheme, where they ran
