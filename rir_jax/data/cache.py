"""Decoded splits kept as .npy files beside the prepared data: after the first load a split
loads in milliseconds instead of seconds of decoding."""
import logging
import os
from typing import Callable

import numpy as np

FOLDER = 'rir_arrays'  # inside the builder's data_path
Arrays = tuple[np.ndarray, np.ndarray]  # (uint8 NHWC images, int32 labels)


def split_arrays(builder, split: str, decode: Callable[[], Arrays]) -> Arrays:
  """(images, labels) of a prepared split, from the cache, made with `decode()` on first use.

  A damaged cache is made again; a data_dir the cache cannot be written to still loads.
  """
  cache = builder.data_path / FOLDER
  images_path, labels_path = cache / f'{split}_images.npy', cache / f'{split}_labels.npy'
  if images_path.exists() and labels_path.exists():
    try:
      return np.load(images_path), np.load(labels_path)
    except (OSError, ValueError, EOFError) as e:
      logging.warning('the cached %s arrays in %s are damaged (%s): making them again',
                      split, cache, ' '.join(str(e).split()))
  images, labels = decode()
  try:
    cache.mkdir(exist_ok=True)
    for path, array in ((images_path, images), (labels_path, labels)):
      # Written aside then renamed, so a concurrent or killed writer leaves no half file.
      partial = path.with_suffix(f'.{os.getpid()}.partial')
      with open(partial, 'wb') as f:
        np.save(f, array)
      os.replace(partial, path)
  except OSError as e:  # A read-only data_dir still loads, only more slowly.
    logging.warning('could not cache %s arrays in %s: %s', builder.name, cache, e)
  return images, labels
