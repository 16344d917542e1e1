"""Decoded splits kept as .npy files beside the prepared data: after the first load a split
loads in milliseconds instead of seconds of decoding."""
import logging
import os
from typing import Callable

import numpy as np

FOLDER = 'rir_arrays'  # inside the builder's data_path
Arrays = tuple[np.ndarray, np.ndarray]  # (uint8 NHWC images, int32 labels)


def paths(builder, split: str) -> tuple:
  """The (images, labels) .npy files of a split's cache."""
  cache = builder.data_path / FOLDER
  return cache / f'{split}_images.npy', cache / f'{split}_labels.npy'


def split_arrays(builder, split: str, decode: Callable[[], Arrays]) -> Arrays:
  """(images, labels) of a prepared split, from the cache, made with `decode()` on first use.

  A damaged cache is made again; a data_dir the cache cannot be written to still loads.
  """
  images_path, labels_path = paths(builder, split)
  if images_path.exists() and labels_path.exists():
    try:
      return np.load(images_path), np.load(labels_path)
    except (OSError, ValueError, EOFError) as e:
      logging.warning('the cached %s arrays in %s are damaged (%s): making them again',
                      split, images_path.parent, ' '.join(str(e).split()))
  images, labels = decode()
  write(builder, split, images, labels)
  return images, labels


def write(builder, split: str, images: np.ndarray, labels: np.ndarray) -> None:
  """Caches a split's decoded arrays; where it cannot (a read-only data_dir), a warning."""
  cache = builder.data_path / FOLDER
  try:
    cache.mkdir(exist_ok=True)
    for path, array in zip(paths(builder, split), (images, labels)):
      # Written aside then renamed, so a concurrent or killed writer leaves no half file.
      partial = path.with_suffix(f'.{os.getpid()}.partial')
      try:
        with open(partial, 'wb') as f:
          np.save(f, array)
        os.replace(partial, path)
      finally:  # A full disk keeps no half file (on a disk already full).
        partial.unlink(missing_ok=True)
  except OSError as e:  # A read-only data_dir still loads, only more slowly.
    logging.warning('could not cache %s arrays in %s: %s', builder.name, cache, e)
