"""image_folder on tiny trees written here, and cifar10_jpeg on the real JPEG CIFAR-10 tarball."""
import tarfile

import numpy as np
from PIL import Image
import pytest

from rir_jax import data
from rir_jax.data import loader


def _write_image(path, array, mode=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array, mode).save(path)


def _write_tree(root, size=(6, 5)):
  """Two classes, PNG and lossless content: returns split -> list of (class, HxWx3 image)."""
  rng = np.random.default_rng(0)
  tree = {'train': [], 'test': []}
  for split, count in (('train', 3), ('test', 2)):
    for label in ('zebra', 'ant'):  # Written in reverse order: classes must come out sorted.
      for i in range(count):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        _write_image(root / split / label / f'{i:02d}.png', image)
        tree[split].append((label, image))
  return {split: sorted(items, key=lambda item: item[0]) for split, items in tree.items()}


def test_image_folder_classes_sorted_and_pixels_kept(tmp_path):
  expected = _write_tree(tmp_path / 'pets')
  dataset = data.load_dataset('image_folder', data_dir=tmp_path / 'tfds',
                              manual_dir=tmp_path / 'pets', download=False)
  assert dataset.num_classes == 2
  assert dataset.train_labels.tolist() == [0, 0, 0, 1, 1, 1]  # ant, then zebra.
  assert dataset.test_labels.tolist() == [0, 0, 1, 1]
  np.testing.assert_array_equal(dataset.train_images, np.stack([i for _, i in expected['train']]))
  np.testing.assert_array_equal(dataset.test_images, np.stack([i for _, i in expected['test']]))
  assert dataset.augmentation == 'none'  # 6x5 images are not CIFAR-like.
  assert 'pets' in dataset.description


def test_image_folder_converts_to_rgb_and_reads_archives(tmp_path):
  gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
  rgba = np.full((32, 32, 4), 200, np.uint8)
  _write_image(tmp_path / 'tree' / 'train' / 'a' / 'gray.png', gray)
  _write_image(tmp_path / 'tree' / 'train' / 'b' / 'rgba.png', rgba)
  _write_image(tmp_path / 'tree' / 'test' / 'b' / 'x.jpg', np.zeros((32, 32, 3), np.uint8))
  (tmp_path / 'archived').mkdir()
  with tarfile.open(tmp_path / 'archived' / 'tree.tar.gz', 'w:gz') as tar:
    tar.add(tmp_path / 'tree', arcname='tree')
  for manual_dir in (tmp_path / 'tree', tmp_path / 'archived'):
    dataset = data.load_dataset('image_folder', data_dir=tmp_path / 'tfds', manual_dir=manual_dir)
    assert dataset.train_images.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(dataset.train_images[0], np.stack([gray] * 3, axis=-1))
    assert (dataset.train_images[1] == 200).all()
    assert dataset.augmentation == 'crop_flip'


def test_trees_in_different_folders_do_not_share_prepared_data(tmp_path):
  _write_tree(tmp_path / 'one')
  _write_tree(tmp_path / 'two', size=(4, 4))
  one = data.load('image_folder', 'train', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'one')
  two = data.load('image_folder', 'train', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'two')
  assert one[0].shape[1:] == (6, 5, 3) and two[0].shape[1:] == (4, 4, 3)


@pytest.mark.parametrize('spoil, expected', [
    (lambda root: (root / 'test/ant/01.png').write_bytes(b'not an image'),
     'test/ant/01.png: not a readable image'),
    (lambda root: _write_image(root / 'train/zebra/99.png', np.zeros((7, 7, 3), np.uint8)),
     'train/zebra/99.png: image of shape'),
    (lambda root: _write_image(root / 'test/bee/0.png', np.zeros((6, 5, 3), np.uint8)),
     r"test classes \['bee'\] have no train images"),
])
def test_bad_tree_is_refused_naming_the_file(spoil, expected, tmp_path):
  _write_tree(tmp_path / 'pets')
  spoil(tmp_path / 'pets')
  with pytest.raises(data.DataError, match=expected):
    data.load_dataset('image_folder', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'pets')


def test_image_folder_without_a_tree_says_what_was_expected(tmp_path):
  with pytest.raises(data.DataError, match=r'needs --manual_dir'):
    data.load_dataset('image_folder', data_dir=tmp_path)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(data.DataError, match=r'expected train/<class>/\*\.png\|jpg'):
    data.load_dataset('image_folder', data_dir=tmp_path, manual_dir=tmp_path / 'empty')


def test_cifar10_jpeg_from_the_real_tarball(tmp_path, shared_data):
  prepared = loader.prepare('cifar10_jpeg', data_dir=tmp_path,
                            manual_dir=shared_data / 'cifar10_jpeg')
  assert prepared.num_examples == {'train': 50_000, 'test': 10_000}
  dataset = data.load_dataset('cifar10_jpeg', data_dir=tmp_path, download=False)
  assert dataset.train_images.shape == (50_000, 32, 32, 3)
  assert np.bincount(dataset.train_labels).tolist() == [5000] * 10
  assert np.bincount(dataset.test_labels).tolist() == [1000] * 10
  # CIFAR-10's channel means are 0.4914, 0.4822, 0.4465: JPEG at q75 stays close.
  np.testing.assert_allclose(dataset.mean, [0.4914, 0.4822, 0.4465], atol=2e-3)
  assert (dataset.num_classes, dataset.augmentation) == (10, 'crop_flip')
  assert dataset.description == 'CIFAR-10 (JPEG q75)'


def test_cifar10_jpeg_refuses_other_classes(tmp_path):
  _write_tree(tmp_path / 'pets', size=(32, 32))
  with pytest.raises(data.DataError, match="are not CIFAR-10's"):
    data.load_dataset('cifar10_jpeg', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'pets')


def test_corrupt_tarball_is_refused_naming_it(tmp_path, shared_data):
  (tmp_path / 'manual').mkdir()
  content = (shared_data / 'cifar10_jpeg' / 'cifar10_jpeg.tar.gz').read_bytes()
  (tmp_path / 'manual' / 'cifar10_jpeg.tar.gz').write_bytes(content[:len(content) // 2])
  with pytest.raises(data.DataError, match='cifar10_jpeg.tar.gz: corrupt or truncated'):
    data.load_dataset('cifar10_jpeg', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual')
