"""Datasets by name: prepared once with TFDS, then loaded whole into host memory.

Prepared data sits where TFDS puts it, `<data_dir>/<builder>/<version>/`, with
`data_dir` defaulting to $TFDS_DATA_DIR or ~/tensorflow_datasets; a gs:// data_dir
goes through a local mirror (`remote`), decoded splits through `cache`.
"""
import contextlib
import dataclasses
import errno
import logging
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from rir_jax import storage
from rir_jax.data import cache
from rir_jax.data import pictures
from rir_jax.data import registry
from rir_jax.data import remote
from rir_jax.data import synthetic
from rir_jax.data.errors import DataError
from rir_jax.data.registry import SPLITS, SYNTHETIC, Dataset

_DECODE_CHUNK = 4096
_STATS_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Prepared:
  """Where `prepare` put a dataset, and the number of examples of each split."""
  path: str
  num_examples: dict[str, int]


def default_data_dir() -> str:
  """TFDS's default: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
            download: bool = True) -> Prepared:
  """Prepares `name` unless it already is, including the .npy cache of each split."""
  if name == SYNTHETIC:
    return Prepared('(generated in memory, nothing to prepare)', dict(synthetic.SIZES))
  builder = _prepared_builder(name, data_dir, manual_dir, download)
  counts = {split: len(_split_arrays(builder, split)[1]) for split in SPLITS}
  path = os.fspath(builder.data_path)
  if data_dir is not None and storage.is_remote(data_dir):  # where it went, not the mirror
    path = path.replace(os.fspath(remote.mirror_dir(os.fspath(data_dir))), os.fspath(data_dir))
  return Prepared(path, counts)


def load(name: str, split: str, *, data_dir: str | None = None,
         manual_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """One split as (uint8 NHWC images, int32 labels), preparing the dataset if needed."""
  if split not in SPLITS:
    raise DataError(f'unknown split {split!r}; choose one of: {", ".join(SPLITS)}')
  if name == SYNTHETIC:
    return synthetic.split(split)
  return _split_arrays(_prepared_builder(name, data_dir, manual_dir, download=True), split)


def load_dataset(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
                 download: bool = True) -> Dataset:
  """Both splits of `name` in host memory, with the train split's channel statistics.

  Args:
    name: one of DATASET_NAMES.
    data_dir: where prepared data lives; default $TFDS_DATA_DIR or ~/tensorflow_datasets.
    manual_dir: a folder with the original files, used instead of downloading.
    download: whether unprepared data may be downloaded. When False, data that is
      neither prepared nor given by manual_dir fails at once, without network.

  Returns:
    The Dataset.
  """
  if name == SYNTHETIC:
    (train_images, train_labels), test = synthetic.split('train'), synthetic.split('test')
    num_classes = synthetic.NUM_CLASSES
    class_names = tuple(str(label) for label in range(num_classes))
  else:
    builder = _prepared_builder(name, data_dir, manual_dir, download)
    train_images, train_labels = _split_arrays(builder, 'train')
    test = _split_arrays(builder, 'test')
    num_classes = builder.info.features['label'].num_classes
    if num_classes < 2:
      raise DataError(f'{name} has {num_classes} class (prepared in {builder.data_path}); a '
                      'classifier needs at least two')
    class_names = tuple(builder.info.features['label'].names)
  mean, std = channel_stats(train_images)
  colour_32 = train_images.shape[1:] == (32, 32, 3)
  return Dataset(
      name=name, train_images=train_images, train_labels=train_labels,
      test_images=test[0], test_labels=test[1], num_classes=num_classes,
      augmentation='crop_flip' if colour_32 else 'none', mean=mean, std=std,
      description=registry.description(name, manual_dir), class_names=class_names)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Exact per-channel mean and std of uint8 NHWC images, in [0, 1] units."""
  # A histogram per channel is exact, and counting in chunks of pixels avoids
  # a float (or int64, inside bincount) copy of the whole split.
  channels = images.shape[-1]
  pixels = images.reshape(-1, channels)
  offsets = np.arange(channels) * 256
  counts = np.zeros(channels * 256, np.int64)
  for start in range(0, len(pixels), _STATS_CHUNK):
    chunk = pixels[start:start + _STATS_CHUNK] + offsets  # Bin (channel, value).
    counts += np.bincount(chunk.ravel(), minlength=channels * 256)
  p = counts.reshape(channels, 256) / len(pixels)
  values = np.arange(256) / 255
  mean = p @ values
  std = np.sqrt(np.sum(p * (values - mean[:, None]) ** 2, axis=1))
  return mean.astype(np.float32), std.astype(np.float32)


def _prepared_builder(name, data_dir, manual_dir, download):
  """The builder of `name`, prepared from manual_dir or a download if it is not yet."""
  cls = registry.builder_class(name)
  data_dir = os.path.expanduser(os.fspath(data_dir or default_data_dir()))
  for key, given in (("data_dir", data_dir), ("manual_dir", manual_dir)):
    try:
      storage.check_supported(given or "")
    except storage.UnsupportedURL as error:
      raise DataError(f"{key} {error}") from None
  if storage.is_remote(data_dir):
    return _prepared_remote_builder(name, cls, data_dir, manual_dir, download)
  if manual_dir is not None:
    manual_dir = os.path.expanduser(os.fspath(manual_dir))
  with _quiet_tfds(), _damaged_prepared_data(name, data_dir):
    builder = cls.create(data_dir, manual_dir)
    if builder.is_prepared():
      return builder
  if manual_dir is not None:
    _check_manual_dir(name, cls, pathlib.Path(manual_dir))
  elif not download or not cls.URLS:
    raise DataError(_not_prepared_message(name, cls, data_dir))
  logging.info('preparing %s in %s (once)', name, data_dir)
  try:
    # Progress bars would come before (and bury) the one line of a DataError.
    tfds.display_progress_bar(False)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    for split, (images, labels) in getattr(builder, 'written_arrays', {}).items():
      cache.write(builder, split, images, labels)
  except (OSError, RuntimeError) as e:
    if not _is_write_failure(e):
      raise
    # Another process preparing the same data_dir may have won the final rename:
    # then its data is ready. Otherwise (disk full, no permission) the user must act.
    with _quiet_tfds():
      builder = cls.create(data_dir, manual_dir)
      if not builder.is_prepared():
        raise DataError(f'could not prepare {name} in {data_dir}: {e}; give it room, or '
                        'choose another data_dir') from None
  finally:
    tfds.display_progress_bar(True)
  return builder


# What the C++ record writers put in their RuntimeError when the file system refuses a write.
_WRITE_FAILURES = tuple(os.strerror(code) for code in (
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.EFBIG))


def _is_write_failure(error: Exception) -> bool:
  """An OSError, or a record writer's RuntimeError that carries one's reason."""
  return isinstance(error, OSError) or any(text in str(error) for text in _WRITE_FAILURES)


def _prepared_remote_builder(name, cls, data_dir, manual_dir, download):
  """The builder over the local mirror of a gs:// data_dir; what it prepares is uploaded."""
  try:
    mirror = os.fspath(remote.download(data_dir, cls.name, derived_cache=cache.FOLDER))
  except Exception as e:  # noqa: BLE001 - no bucket, no credentials, no network
    raise DataError(f'cannot read data_dir {data_dir}: {" ".join(str(e).split())}') from None
  with _quiet_tfds():
    prepared_before = cls.create(mirror, manual_dir).is_prepared()
  try:
    builder = _prepared_builder(name, mirror, manual_dir, download)
  except DataError as e:  # name the bucket, not the mirror, in what to do
    raise DataError(str(e).replace(mirror, data_dir)) from None
  if not prepared_before:
    for split in SPLITS:  # decoded once here, rather than on every machine that trains
      _split_arrays(builder, split)
    remote.upload(data_dir, cls.name)
  return builder


def _check_manual_dir(name, cls, folder):
  if not folder.is_dir():
    raise DataError(f'manual_dir {folder} is not a folder; for {name} it must hold '
                    f'{cls.EXPECTED}')
  if cls.find_manual_files(folder) is None:
    raise DataError(f'manual_dir {folder} does not hold the {name} files: expected '
                    f'{cls.EXPECTED}')


def _not_prepared_message(name, cls, data_dir):
  command = f'python -m rir_jax.data.prepare {name} --data_dir {data_dir}'
  if cls.URLS:
    return (f'{name} is not prepared in {data_dir} and downloading is off (download=False): '
            f'run `{command}` (add --manual_dir DIR when offline, DIR holding {cls.EXPECTED})')
  return (f'{name} is not prepared in {data_dir} and cannot be downloaded: run '
          f'`{command} --manual_dir DIR`, DIR holding {cls.EXPECTED}')


def _split_arrays(builder, split):
  """(images, labels) of a prepared split: cached, else decoded (damaged files: a DataError
  naming the folder to delete)."""

  def decode():  # a picture stored as it came may carry a warning of Pillow's: told once
    with _damaged_prepared_data(builder.name, builder.data_path), pictures.warnings_named(
        f'{builder.data_path} ({split})'):
      return _decode_split(builder, split)

  return cache.split_arrays(builder, split, decode)


def _decode_split(builder, split):
  """Reads a split through TFDS's array_record data source and stacks it."""
  source = builder.as_data_source(split=split)
  images, labels = [], []
  for start in range(0, len(source), _DECODE_CHUNK):
    with _quiet_tfds():
      examples = source.__getitems__(range(start, min(start + _DECODE_CHUNK, len(source))))
    images.append(np.stack([example['image'] for example in examples]))
    labels.append(np.asarray([example['label'] for example in examples], np.int32))
  return np.concatenate(images), np.concatenate(labels)


@contextlib.contextmanager
def _damaged_prepared_data(name, folder):
  """Prepared files that cannot be read: one line naming the folder to delete."""
  try:
    yield
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except - TFDS and array_record raise many kinds
    raise DataError(f'the prepared {name} data in {folder} is damaged ({type(e).__name__}: '
                    f'{str(e)[:200]}); delete that folder and re-run to prepare it again'
                    ) from None


@contextlib.contextmanager
def _quiet_tfds():
  """Hides TFDS's warnings about the expected: data not yet prepared, no OpenCV, ...

  Users' stderr then shows real problems only (and DataError's one line).
  """
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)
