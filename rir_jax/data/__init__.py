"""Datasets for rir-jax: TFDS builders without TensorFlow, loaded whole into host memory.

    images, labels = data.load('mnist', 'train')
    dataset = data.load_dataset('cifar10', manual_dir='~/cifar')

Input pipeline pieces live in `rir_jax.data.pipeline` (host, numpy: which
examples form each batch) and `rir_jax.data.augment` (device, jax: crop, flip,
normalize inside jit). Prepare from the command line with
`python -m rir_jax.data.prepare NAME [--manual_dir DIR] [--data_dir DIR]`.
"""
from rir_jax.data.errors import DataError
from rir_jax.data.sources import DATASET_NAMES
from rir_jax.data.sources import Dataset
from rir_jax.data.sources import default_data_dir
from rir_jax.data.sources import load
from rir_jax.data.sources import load_dataset

__all__ = [
    'DATASET_NAMES', 'DataError', 'Dataset', 'default_data_dir', 'load', 'load_dataset',
]
