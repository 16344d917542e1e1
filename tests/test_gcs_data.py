"""A data_dir on gs://: prepared into the bucket once, then read on any machine through a
local mirror, against a local GCS emulator."""
import os

import numpy as np
import pytest

import gcs_emulator
from rir_jax.data import DataError, remote, sources

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # see gcs_emulator

BUCKET = "rir-data"


@pytest.fixture(scope="module")
def emulator():
  with gcs_emulator.running_emulator() as (url, fs):
    gcs_emulator.create_bucket(url, BUCKET)
    yield url, fs


def test_mnist_prepared_into_gs_loads_on_a_fresh_machine_as_from_a_local_folder(
    emulator, shared_data, prepared_data_dir, tmp_path, monkeypatch):
  _, fs = emulator
  data_dir = f"gs://{BUCKET}/data"
  monkeypatch.setattr(remote, "MIRRORS", tmp_path / "preparing_machine")
  sources.prepare("mnist", data_dir=data_dir, manual_dir=shared_data / "mnist")
  assert fs.glob(f"{BUCKET}/data/**/*.array_record*")  # the prepared files are in the bucket

  monkeypatch.setattr(remote, "MIRRORS", tmp_path / "training_machine")
  from_gs = sources.load_dataset("mnist", data_dir=data_dir, download=False)
  local = sources.load_dataset("mnist", data_dir=prepared_data_dir, download=False)
  np.testing.assert_array_equal(from_gs.train_images, local.train_images)
  np.testing.assert_array_equal(from_gs.test_labels, local.test_labels)
  assert (tmp_path / "training_machine" / BUCKET / "data").is_dir()


def test_a_gs_data_dir_without_the_dataset_names_the_bucket(emulator, tmp_path, monkeypatch):
  monkeypatch.setattr(remote, "MIRRORS", tmp_path)
  with pytest.raises(DataError, match=f"not prepared in gs://{BUCKET}/empty"):
    sources.load_dataset("fashion_mnist", data_dir=f"gs://{BUCKET}/empty", download=False)
