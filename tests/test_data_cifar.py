"""CIFAR-10/100 builders on small archives in the original layouts, and on TFDS mock data."""
import io
import pickle
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from rir_jax import data
from rir_jax.data import builders
from rir_jax.data import loader

CIFAR10_MEMBERS = {'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']}
CIFAR100_MEMBERS = {'train': ['train'], 'test': ['test']}


def _random_batch(rng, size, label_classes):
  """Random records: labels per label byte, and images as 3072 bytes of R, G, B planes."""
  labels = [rng.integers(0, n, size, dtype=np.uint8) for n in label_classes]
  planes = rng.integers(0, 256, (size, 3072), dtype=np.uint8)
  return labels, planes


def _expected_nhwc(planes):
  """What the docs say a record means: pixel (y, x) of channel c is byte c*1024 + y*32 + x."""
  images = np.empty((len(planes), 32, 32, 3), np.uint8)
  for c in range(3):
    for y in range(32):
      images[:, y, :, c] = planes[:, c * 1024 + y * 32:c * 1024 + y * 32 + 32]
  return images


def _write_tar(path, members):
  with tarfile.open(path, 'w:gz') as tar:
    for name, content in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))


def _write_cifar(folder, *, hundred, python, sizes=(3, 2, 4, 1, 2, 5), seed=0):
  """Writes a small CIFAR archive in the original layout; returns split -> (images, labels)."""
  rng = np.random.default_rng(seed)
  members_by_split = CIFAR100_MEMBERS if hundred else CIFAR10_MEMBERS
  label_classes = (20, 100) if hundred else (10,)  # Binary byte order: coarse, then fine.
  prefix = ('cifar-100-' if hundred else 'cifar-10-batches-') + ('python' if python else 'bin')
  members, expected = {}, {}
  sizes = iter(sizes)
  for split, names in members_by_split.items():
    parts = []
    for name in names:
      labels, planes = _random_batch(rng, next(sizes), label_classes)
      if python:
        keys = [b'coarse_labels', b'fine_labels'] if hundred else [b'labels']
        batch = {b'data': planes, **{k: v.tolist() for k, v in zip(keys, labels)}}
        members[f'{prefix}/{name}'] = pickle.dumps(batch)
      else:
        records = np.concatenate([np.stack(labels, axis=1), planes], axis=1)
        members[f'{prefix}/{name}.bin'] = records.tobytes()
      parts.append((_expected_nhwc(planes), labels[-1], labels[0]))
    expected[split] = tuple(np.concatenate(p) for p in zip(*parts))
  archive = ('cifar-100-' if hundred else 'cifar-10-') + ('python' if python else 'binary')
  folder.mkdir(parents=True, exist_ok=True)
  _write_tar(folder / f'{archive}.tar.gz', members)
  return expected


@pytest.mark.parametrize('python', [False, True], ids=['binary', 'python'])
def test_cifar10_archive(python, tmp_path):
  expected = _write_cifar(tmp_path / 'manual', hundred=False, python=python)
  dataset = data.load_dataset('cifar10', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual',
                              download=False)
  np.testing.assert_array_equal(dataset.train_images, expected['train'][0])
  np.testing.assert_array_equal(dataset.train_labels, expected['train'][1])
  np.testing.assert_array_equal(dataset.test_images, expected['test'][0])
  np.testing.assert_array_equal(dataset.test_labels, expected['test'][1])
  assert len(dataset.train_labels) == 3 + 2 + 4 + 1 + 2 and len(dataset.test_labels) == 5
  # The dataset came from the arrays cached when preparing; the prepared records agree.
  builder = builders.RirCifar10(data_dir=tmp_path / 'tfds')
  for split in ('train', 'test'):
    images, labels = loader._decode_split(builder, split)
    np.testing.assert_array_equal(images, expected[split][0])
    np.testing.assert_array_equal(labels, expected[split][1])
  assert (dataset.num_classes, dataset.augmentation) == (10, 'crop_flip')
  assert dataset.mean.shape == (3,) and dataset.description == 'CIFAR-10'


@pytest.mark.parametrize('python', [False, True], ids=['binary', 'python'])
def test_cifar100_keeps_fine_and_coarse_labels(python, tmp_path):
  expected = _write_cifar(tmp_path / 'manual', hundred=True, python=python, sizes=(40, 7))
  images, labels = data.load('cifar100', 'train', data_dir=tmp_path / 'tfds',
                             manual_dir=tmp_path / 'manual')
  np.testing.assert_array_equal(images, expected['train'][0])
  np.testing.assert_array_equal(labels, expected['train'][1])  # Fine labels.
  builder = builders.RirCifar100(data_dir=tmp_path / 'tfds')
  assert builder.info.features['label'].num_classes == 100
  assert builder.info.splits['test'].num_examples == 7
  source = builder.as_data_source(split='train')
  coarse = [source[i]['coarse_label'] for i in range(len(source))]
  np.testing.assert_array_equal(coarse, expected['train'][2])
  assert source[3]['id'] == b'train_00003'  # Text decodes to bytes without TF.


def test_truncated_archive_is_refused_naming_it(tmp_path):
  _write_cifar(tmp_path / 'manual', hundred=False, python=False)
  archive = tmp_path / 'manual' / 'cifar-10-binary.tar.gz'
  archive.write_bytes(archive.read_bytes()[:-30])
  with pytest.raises(data.DataError, match='cifar-10-binary.tar.gz: corrupt or truncated'):
    data.load_dataset('cifar10', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual')


def test_truncated_member_is_refused_naming_it(tmp_path):
  members = {f'cifar-10-batches-bin/{name}.bin': bytes(3073 * 2)
             for names in CIFAR10_MEMBERS.values() for name in names}
  members['cifar-10-batches-bin/data_batch_3.bin'] = bytes(3073 * 2 - 5)
  (tmp_path / 'manual').mkdir()
  _write_tar(tmp_path / 'manual' / 'cifar-10-binary.tar.gz', members)
  with pytest.raises(data.DataError, match=r'binary.tar.gz: data_batch_3.bin is truncated'):
    data.load_dataset('cifar10', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual')


def test_archive_of_the_wrong_dataset_is_refused(tmp_path):
  _write_cifar(tmp_path / 'manual', hundred=True, python=False)
  (tmp_path / 'manual' / 'cifar-100-binary.tar.gz').rename(
      tmp_path / 'manual' / 'cifar-10-binary.tar.gz')
  with pytest.raises(data.DataError, match="has no member 'data_batch_1.bin'"):
    data.load_dataset('cifar10', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual')


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
  class RunsCode:
    def __reduce__(self):
      return (print, ('pwned',))

  members = {f'cifar-10-batches-py/{name}': pickle.dumps(RunsCode())
             for names in CIFAR10_MEMBERS.values() for name in names}
  (tmp_path / 'manual').mkdir()
  _write_tar(tmp_path / 'manual' / 'cifar-10-python.tar.gz', members)
  with pytest.raises(data.DataError, match='not a valid CIFAR pickle'):
    data.load_dataset('cifar10', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual')
  assert 'pwned' not in capsys.readouterr().out


def test_download_uses_tfds_registered_urls_and_checksums():
  registered = tfds.download.checksums.get_all_url_infos()
  for builder in (builders.RirMnist, builders.RirFashionMnist, builders.RirCifar10,
                  builders.RirCifar100):
    for url in builder.URLS.values():
      assert builder.url_infos[url] == registered[url], url


class _FakeDownloadManager:
  """Has no manual folder and 'downloads' by returning local files, or failing."""

  def __init__(self, files=None):
    self.files = files

  @property
  def manual_dir(self):
    raise AssertionError('no manual dir')

  def download(self, urls):
    if self.files is None:
      raise ConnectionError('Name or service not known\nmore details')
    return {key: self.files[key] for key in urls}


def test_download_path_reads_the_downloaded_archive(tmp_path):
  expected = _write_cifar(tmp_path, hundred=False, python=False)
  builder = builders.RirCifar10(data_dir=tmp_path / 'tfds')
  splits = builder._split_generators(
      _FakeDownloadManager({'archive': tmp_path / 'cifar-10-binary.tar.gz'}))
  labels = [example['label'] for _, example in splits['test']]
  assert labels == expected['test'][1].tolist()


def test_download_failure_is_one_line_data_error(tmp_path):
  builder = builders.RirMnist(data_dir=tmp_path)
  with pytest.raises(data.DataError, match='could not download mnist .*--manual_dir') as error:
    builder._split_generators(_FakeDownloadManager())
  assert '\n' not in str(error.value) and 'more details' not in str(error.value)


def test_cifar100_reads_through_tfds_mock_data(tmp_path):
  """The loading path on TFDS's own fake examples, without any archive."""

  def fake_data_source(builder, split, **kwargs):
    del split, kwargs
    generator = mocking.RandomFakeGenerator(builder.info.features, num_examples=6)
    return _ListSource(generator[i] for i in range(6))

  with tfds.testing.mock_data(data_dir=str(tmp_path), as_data_source_fn=fake_data_source):
    dataset = data.load_dataset('cifar100', data_dir=tmp_path)
  assert dataset.train_images.shape == (6, 32, 32, 3)
  assert dataset.train_images.dtype == np.uint8
  assert dataset.num_classes == 100
  assert ((0 <= dataset.test_labels) & (dataset.test_labels < 100)).all()


class _ListSource(list):
  """A list with the batched read of TFDS data sources."""

  def __getitems__(self, keys):
    return [self[key] for key in keys]


def test_cache_is_used_after_the_first_load(tmp_path, monkeypatch):
  _write_cifar(tmp_path / 'manual', hundred=False, python=False)
  first = data.load('cifar10', 'train', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual')
  monkeypatch.setattr(loader, '_decode_split', lambda *args: pytest.fail('decoded again'))
  second = data.load('cifar10', 'train', data_dir=tmp_path / 'tfds')
  np.testing.assert_array_equal(first[0], second[0])
