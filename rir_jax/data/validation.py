"""A validation split carved from the training split: the same examples for the same (N, seed).

He et al. held out 5,000 of CIFAR's 50,000 training images to choose their schedule;
the test split then measures the chosen model once, never chooses it.
"""
import dataclasses

import numpy as np

from rir_jax.data.errors import DataError
from rir_jax.data.loader import channel_stats, load_dataset
from rir_jax.data.registry import Dataset


def held_out_indices(num_train: int, num_validation: int, seed: int) -> np.ndarray:
  """Sorted indices of the held-out examples: a function of its arguments alone."""
  order = np.random.default_rng((seed, num_train, num_validation)).permutation(num_train)
  return np.sort(order[:num_validation])


def carve(dataset: Dataset, num_validation: int, seed: int) -> Dataset:
  """`dataset` with `num_validation` training examples moved to its validation split.

  Its mean/std become those of the examples left to train on: nothing about the
  validation examples leaks into training.
  """
  num_train = len(dataset.train_labels)
  if not 0 < num_validation < num_train:
    raise DataError(f'--config.data.validation_examples={num_validation} must be between 1 '
                    f'and {num_train - 1} (the {dataset.name} training split has {num_train})')
  held = held_out_indices(num_train, num_validation, seed)
  keep = np.ones(num_train, bool)
  keep[held] = False
  train_images = dataset.train_images[keep]
  mean, std = channel_stats(train_images)
  return dataclasses.replace(
      dataset, train_images=train_images, train_labels=dataset.train_labels[keep],
      mean=mean, std=std, validation_images=dataset.train_images[held],
      validation_labels=dataset.train_labels[held])


def load_for_config(data_config) -> Dataset:
  """The dataset a config trains on: `config.data`'s, with its validation split carved."""
  dataset = load_dataset(data_config.name, data_dir=data_config.data_dir,
                         manual_dir=data_config.manual_dir, download=data_config.download)
  if data_config.validation_examples:
    dataset = carve(dataset, data_config.validation_examples, data_config.validation_seed)
  return dataset
