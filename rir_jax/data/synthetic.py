"""The synthetic dataset: random 32x32x3 images and 10-class labels, for throughput
benchmarks; generated in memory, the same on every call, nothing to prepare."""
import numpy as np

from rir_jax.data.registry import SPLITS

SIZES = {'train': 10_000, 'test': 512}  # test: a quick eval in smoke runs
NUM_CLASSES = 10
_SEED = 0


def split(name: str) -> tuple[np.ndarray, np.ndarray]:
  """Split `name` as (uint8 NHWC images, int32 labels)."""
  rng = np.random.default_rng((_SEED, SPLITS.index(name)))
  size = SIZES[name]
  images = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
  return images, rng.integers(0, NUM_CLASSES, size).astype(np.int32)
