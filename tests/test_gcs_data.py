"""A data_dir on gs://: prepared into the bucket once, then read on any machine through a
local mirror, against a local GCS emulator."""
import io

import numpy as np
import pytest
from PIL import Image

import gcs_emulator
from rir_jax.data import DataError, loader, remote

BUCKET = "rir-data"


@pytest.fixture(scope="module")
def emulator():
  with gcs_emulator.running_emulator() as (url, fs):
    gcs_emulator.create_bucket(url, BUCKET)
    yield url, fs


def _write_tree(root) -> None:
  """A tiny image_folder dataset: two classes of random 8x8 PNG images."""
  rng = np.random.default_rng(0)
  for split, count in (("train", 4), ("test", 2)):
    for label in ("ant", "bee"):
      for i in range(count):
        path = root / split / label / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def test_data_prepared_into_gs_loads_on_a_fresh_machine_as_from_a_local_folder(
    emulator, tmp_path, monkeypatch):
  _, fs = emulator
  data_dir, tree = f"gs://{BUCKET}/data", tmp_path / "tree"
  _write_tree(tree)
  monkeypatch.setattr(remote, "MIRRORS", tmp_path / "preparing_machine")
  prepared = loader.prepare("image_folder", data_dir=data_dir, manual_dir=tree)
  assert prepared.path.startswith(f"{data_dir}/") and prepared.num_examples["train"] == 8
  assert fs.glob(f"{BUCKET}/data/**/*.array_record*")  # the prepared files are in the bucket
  assert fs.glob(f"{BUCKET}/data/**/rir_arrays/train_images.npy")  # decoded once, uploaded

  monkeypatch.setattr(remote, "MIRRORS", tmp_path / "training_machine")
  from_gs = loader.load_dataset("image_folder", data_dir=data_dir, manual_dir=tree,
                                download=False)
  local = loader.load_dataset("image_folder", data_dir=tmp_path / "local", manual_dir=tree,
                              download=False)
  assert from_gs.train_images.shape == (8, 8, 8, 3)
  for name in ("train_images", "train_labels", "test_images", "test_labels"):
    np.testing.assert_array_equal(getattr(from_gs, name), getattr(local, name))
  assert (tmp_path / "training_machine" / BUCKET / "data").is_dir()

  # An object rewritten in the bucket, same size, is copied again on the next load.
  (cached,) = fs.glob(f"{BUCKET}/data/**/rir_arrays/train_images.npy")
  buffer = io.BytesIO()
  np.save(buffer, 255 - local.train_images)
  fs.pipe_file(cached, buffer.getvalue())
  again = loader.load_dataset("image_folder", data_dir=data_dir, manual_dir=tree,
                              download=False)
  np.testing.assert_array_equal(again.train_images, 255 - local.train_images)


def test_a_gs_data_dir_without_the_dataset_names_the_bucket(emulator, tmp_path, monkeypatch):
  monkeypatch.setattr(remote, "MIRRORS", tmp_path)
  with pytest.raises(DataError, match=f"not prepared in gs://{BUCKET}/empty"):
    loader.load_dataset("mnist", data_dir=f"gs://{BUCKET}/empty", download=False)
