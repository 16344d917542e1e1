"""Datasets for rir-jax: TFDS builders without TensorFlow, loaded whole into host memory.

    images, labels = data.load('mnist', 'train')
    dataset = data.load_dataset('cifar10', manual_dir='~/cifar')

The modules, one concern each:
  registry      dataset names, how each is made, the Dataset type
  loader        prepare and load a dataset by name; the train split's channel statistics
  builders      TFDS builders of MNIST, Fashion-MNIST, CIFAR-10/100
  image_folder  TFDS builders of class-per-subfolder image trees (and JPEG CIFAR-10)
  formats       readers of the original files: IDX, CIFAR archives
  cache         decoded splits kept as .npy files
  remote        a gs:// data_dir through a local mirror
  synthetic     random images for throughput benchmarks
  validation    a validation split carved from the training split
  batching      which examples form each batch (host, numpy)
  feeding       host -> device batches, prefetched
  augment       crop, flip, normalize inside jit (device, jax)
  prepare       the command line: `python -m rir_jax.data.prepare NAME [--manual_dir DIR]`
  errors        DataError, the one exception for every user-facing problem
"""
from rir_jax.data.errors import DataError
from rir_jax.data.loader import default_data_dir
from rir_jax.data.loader import load
from rir_jax.data.loader import load_dataset
from rir_jax.data.registry import DATASET_NAMES
from rir_jax.data.registry import Dataset

__all__ = [
    'DATASET_NAMES', 'DataError', 'Dataset', 'default_data_dir', 'load', 'load_dataset',
]
