"""MNIST and Fashion-MNIST prepared offline from the real files, the prepare CLI, user errors."""
import gzip
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rir_jax import data
from rir_jax.data import builders
from rir_jax.data import cache
from rir_jax.data import formats
from rir_jax.data import prepare as prepare_cli
from rir_jax.data import loader

MNIST_TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope='module')
def data_dir(prepared_data_dir) -> str:
  return os.fspath(prepared_data_dir)


def test_mnist_matches_the_official_dataset(data_dir):
  dataset = data.load_dataset('mnist', data_dir=data_dir, download=False)
  assert dataset.train_images.shape == (60_000, 28, 28, 1)
  assert dataset.test_images.shape == (10_000, 28, 28, 1)
  assert dataset.train_images.dtype == np.uint8 and dataset.train_labels.dtype == np.int32
  assert np.bincount(dataset.train_labels).tolist() == MNIST_TRAIN_HISTOGRAM
  assert np.bincount(dataset.test_labels).tolist() == MNIST_TEST_HISTOGRAM
  assert dataset.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
  assert dataset.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
  assert round(float(dataset.train_images.mean()), 2) == 33.32
  np.testing.assert_allclose(dataset.mean, [0.1307], atol=1e-4)
  np.testing.assert_allclose(dataset.std, [0.3081], atol=1e-4)
  assert dataset.mean.dtype == np.float32
  assert (dataset.num_classes, dataset.augmentation) == (10, 'none')


def test_fashion_mnist_matches_the_official_dataset(data_dir):
  # The shared .gz files are re-compressed (their wrappers differ from upstream's):
  # preparing from them at all shows that content, not wrappers, is checked.
  images, labels = data.load('fashion_mnist', 'train', data_dir=data_dir)
  assert images.shape == (60_000, 28, 28, 1)
  assert np.bincount(labels).tolist() == [6000] * 10
  assert labels[:5].tolist() == [9, 0, 0, 3, 0]
  test_images, test_labels = data.load('fashion_mnist', 'test', data_dir=data_dir)
  assert test_images.shape == (10_000, 28, 28, 1)
  assert np.bincount(test_labels).tolist() == [1000] * 10


def test_prepared_data_is_a_tfds_array_record_dataset(data_dir):
  images, labels = data.load('mnist', 'train', data_dir=data_dir)
  version_dir = pathlib.Path(data_dir, 'rir_mnist', '1.0.0')
  assert list(version_dir.glob('rir_mnist-train.array_record-*'))
  source = tfds.data_source('rir_mnist', split='train', data_dir=data_dir, download=False)
  assert len(source) == 60_000
  for i in (0, 12_345, 59_999):
    np.testing.assert_array_equal(source[i]['image'], images[i])
    assert source[i]['label'] == labels[i]


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist'])
def test_arrays_cached_when_preparing_are_the_decoded_split(data_dir, name):
  # Preparing caches each split's arrays as they were written, without decoding them back
  # (rir_jax.data.builders, _keep_written): they must be what decoding gives.
  builder = loader._prepared_builder(name, data_dir, None, download=False)
  decoded = loader._decode_split(builder, 'test')
  for path, array in zip(cache.paths(builder, 'test'), decoded):
    np.testing.assert_array_equal(np.load(path), array)
    assert np.load(path).dtype == array.dtype


def test_prepare_cli_does_not_redo_prepared_data(data_dir, shared_data, capsys):
  written = {p: p.stat().st_mtime_ns for p in pathlib.Path(data_dir, 'rir_mnist').rglob('*')}
  status = prepare_cli.main(['mnist', '--manual_dir', str(shared_data / 'mnist'),
                             '--data_dir', data_dir])
  assert status == 0
  assert {p: p.stat().st_mtime_ns for p in pathlib.Path(data_dir, 'rir_mnist').rglob('*')} == written
  out = capsys.readouterr().out
  assert os.path.join(data_dir, 'rir_mnist', '1.0.0') in out
  assert 'train: 60,000 examples' in out and 'test: 10,000 examples' in out
  assert 'took' in out


@pytest.mark.parametrize('args, expected', [
    (['nonsense'], 'unknown dataset'),
    ([], 'required'),
    (['mnist', '--manual_dir', '/no/such/folder'], 'is not a folder'),
])
def test_prepare_cli_bad_input_is_one_line_and_exit_2(args, expected, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'rir_jax.data.prepare', *args, '--data_dir', str(tmp_path)],
      capture_output=True, text=True, check=False, timeout=60)
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert expected in result.stderr and 'Traceback' not in result.stderr
  assert result.stdout == ''


def test_not_prepared_without_download_fails_at_once(tmp_path):
  start = time.perf_counter()
  with pytest.raises(data.DataError, match=r'python -m rir_jax\.data\.prepare mnist --data_dir'):
    data.load_dataset('mnist', data_dir=tmp_path, download=False)
  assert time.perf_counter() - start < 1


def test_unknown_dataset_lists_the_choices():
  with pytest.raises(data.DataError, match='choose one of: mnist, fashion_mnist, cifar10'):
    data.load_dataset('imagenet')


def test_wrong_manual_dir_says_what_was_expected(tmp_path, shared_data):
  with pytest.raises(data.DataError, match='expected train-images-idx3-ubyte'):
    loader.prepare('mnist', data_dir=tmp_path, manual_dir=shared_data / 'cifar10_jpeg')


def test_regzipped_idx_is_accepted(tmp_path, shared_data):
  original = shared_data / 'mnist' / 't10k-labels-idx1-ubyte'
  regzipped = tmp_path / 't10k-labels-idx1-ubyte.gz'
  regzipped.write_bytes(gzip.compress(original.read_bytes(), compresslevel=1, mtime=12345))
  labels = formats.read_idx(regzipped, shape=(10_000,),
                            sha256=builders.RirMnist._SHA256['test_labels'])
  np.testing.assert_array_equal(labels, formats.read_idx(original, shape=(10_000,)))


def _manual_copy(shared_data, tmp_path, name, content):
  """A copy of the MNIST folder whose file `name` holds `content` instead."""
  folder = tmp_path / 'manual'
  shutil.copytree(shared_data / 'mnist', folder)
  os.chmod(folder, 0o755)
  (folder / name).chmod(0o644)
  (folder / name).write_bytes(content)
  return folder


@pytest.mark.parametrize('corrupt, expected', [
    (lambda raw: raw[:-100], 'truncated'),
    (lambda raw: gzip.compress(raw)[:-20], 'corrupt or truncated gzip'),
    (lambda raw: b'\x00\x00\x0d\x01' + raw[4:], 'bad magic number'),
    (lambda raw: raw[:8] + bytes([raw[8] ^ 1]) + raw[9:], 'content differs'),
])
def test_corrupt_idx_file_is_refused_naming_it(corrupt, expected, tmp_path, shared_data):
  name = 't10k-labels-idx1-ubyte'
  raw = (shared_data / 'mnist' / name).read_bytes()
  folder = _manual_copy(shared_data, tmp_path, name, corrupt(raw))
  with pytest.raises(data.DataError, match=expected) as error:
    loader.prepare('mnist', data_dir=tmp_path / 'tfds', manual_dir=folder)
  assert name in str(error.value) and '\n' not in str(error.value)
  assert not list((tmp_path / 'tfds').glob('rir_mnist/*/dataset_info.json'))
