"""Every file the project writes outside a run's own loop, on a disk that is full: an
export, an eval report and its picture, the model card, the decoded-array cache, a
bucket mirror's download and a dataset being prepared. Each fails (or, for the cache,
warns) and leaves no half file: nothing a reader would take for whole, nothing that keeps
the full disk fuller. And the commands' standard output, redirected there or to a pipe
whose reader has gone."""
import json
import logging
import subprocess
import sys
import types

import numpy as np
import pytest

from disk_helpers import fill, mount_tmpfs
from launch_helpers import REPO
from rir_jax import data, evaluate, exported, model_card
from rir_jax.data import cache, loader, remote

# A few MB apiece: bigger than what a filled 256 KB tmpfs has left.
BIG = np.arange(1 << 20, dtype=np.float32)


@pytest.fixture
def small_disk(tmp_path, mounts):
  disk = tmp_path / "disk"
  mount_tmpfs(disk, "size=256k")
  mounts.append(disk)
  return disk


@pytest.fixture
def full_disk(small_disk):
  fill(small_disk)
  return small_disk


def _left(disk) -> list[str]:
  return sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.name != "filler")


def test_an_export_on_a_full_disk_leaves_no_file(full_disk):
  with pytest.raises(OSError, match="No space left"):
    exported.write(full_disk / "model.msgpack", {"step": 1},
                   {"params": {"w": BIG}, "batch_stats": {}})
  assert _left(full_disk) == []


def test_an_eval_report_on_a_full_disk_leaves_no_half_report(full_disk):
  (full_disk / "eval").mkdir()
  confusion = np.eye(10, dtype=int).tolist()
  results = {"split": "test", "step": 3, "top1_accuracy": 1.0, "confusion_matrix": confusion,
             "per_class_accuracy": [1.0] * 10, "padding": "x" * (1 << 19)}
  with pytest.raises(OSError, match="No space left"):
    evaluate.write(full_disk / "eval", "run", results)
  assert _left(full_disk) == ["eval"]


def test_a_model_card_on_a_full_disk_leaves_the_old_card_whole(small_disk):
  full_disk = small_disk  # filled once the old card is in
  (full_disk / model_card.MODEL_FILE).write_text('{"old": true}\n')
  fill(full_disk)
  with pytest.raises(OSError, match="No space left"):
    model_card.write(full_disk, {"padding": "x" * (1 << 19)})
  assert json.loads((full_disk / model_card.MODEL_FILE).read_text()) == {"old": True}
  assert _left(full_disk) == [model_card.MODEL_FILE]


def test_the_array_cache_on_a_full_disk_warns_and_leaves_no_partial_file(full_disk, caplog):
  builder = types.SimpleNamespace(data_path=full_disk, name="mnist")
  with caplog.at_level(logging.WARNING):
    cache.write(builder, "train", BIG.view(np.uint8).reshape(-1, 4, 4, 1), np.zeros(4, np.int32))
  assert "could not cache mnist arrays" in caplog.text
  assert _left(full_disk) == [cache.FOLDER]


def test_a_mirror_download_on_a_full_disk_leaves_no_partial_file(full_disk, tmp_path):
  source = tmp_path / "object"
  source.write_bytes(BIG.tobytes())
  with pytest.raises(OSError, match="No space left"):
    remote._copy_in(source, full_disk / "mirror" / "object")
  assert _left(full_disk) == ["mirror"]


def test_preparing_data_on_a_disk_too_small_is_one_line_and_leaves_no_file(
    tmp_path, mounts, shared_data):
  """The record writer's own RuntimeError carries the reason: a DataError, as an OSError."""
  disk = tmp_path / "data_dir"
  mount_tmpfs(disk, "size=4m")  # MNIST's prepared training split alone is 23 MB
  mounts.append(disk)
  with pytest.raises(data.DataError, match=r"could not prepare mnist in .*No space left on "
                                           r"device.*; give it room, or choose another"):
    loader.prepare("mnist", data_dir=disk, manual_dir=shared_data / "mnist")
  assert [p for p in disk.rglob("*") if p.is_file()] == []


# A command (evaluate, predict, export end through cli.run) with more output than a pipe
# or the filled disk takes.
_PRINTS = "from rir_jax import cli; cli.run(lambda argv: print('line\\n' * 50_000) or 0)"


def test_a_commands_output_redirected_to_a_full_disk_is_one_line_exit_1(full_disk):
  with open(full_disk / "out.txt", "w") as out:
    result = subprocess.run([sys.executable, "-c", _PRINTS], cwd=REPO, stdout=out,
                            stderr=subprocess.PIPE, text=True, timeout=120)
  assert result.returncode == 1, result.stderr[-2000:]
  assert result.stderr.splitlines() == [
      "error: cannot write standard output (No space left on device)"]


def test_a_commands_output_whose_reader_has_gone_ends_quietly_with_141():
  proc = subprocess.Popen([sys.executable, "-c", _PRINTS], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
  proc.stdout.close()  # the reader goes, as `| head -1` does after its line
  _, stderr = proc.communicate(timeout=120)
  assert (proc.returncode, stderr.decode()) == (141, "")
