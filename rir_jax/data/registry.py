"""Dataset names and how each is made (a TFDS builder, or generated), and the Dataset type
that loading one gives."""
import dataclasses

import numpy as np

from rir_jax.data import builders
from rir_jax.data import image_folder
from rir_jax.data.errors import DataError

_BUILDERS = {
    'mnist': builders.RirMnist,
    'fashion_mnist': builders.RirFashionMnist,
    'cifar10': builders.RirCifar10,
    'cifar100': builders.RirCifar100,
    'cifar10_jpeg': image_folder.RirCifar10Jpeg,
    'image_folder': image_folder.RirImageFolder,
}
SYNTHETIC = 'synthetic'  # generated in memory (rir_jax.data.synthetic), no builder
DATASET_NAMES = (*_BUILDERS, SYNTHETIC)
SPLITS = ('train', 'test')
_DESCRIPTIONS = {
    'mnist': 'MNIST',
    'fashion_mnist': 'Fashion-MNIST',
    'cifar10': 'CIFAR-10',
    'cifar100': 'CIFAR-100',
    'cifar10_jpeg': 'CIFAR-10 (JPEG q75)',
    'image_folder': 'image folder {manual_dir}',
    SYNTHETIC: 'synthetic (random images, for throughput benchmarks only)',
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A whole dataset in host memory, as the training loop consumes it.

  Attributes:
    name: the name it was loaded by, one of DATASET_NAMES.
    train_images: uint8 array, NHWC.
    train_labels: int32 array.
    test_images: uint8 array, NHWC.
    test_labels: int32 array.
    num_classes: number of classes.
    augmentation: the `kind` for `augment.augment`: "crop_flip" for 32x32 colour
      images (CIFAR, JPEG CIFAR, synthetic, 32x32 image folders), else "none".
    mean: float32 per-channel mean of the train split's pixels, in [0, 1] units
      (pixel / 255), as `augment.normalize` expects.
    std: float32 per-channel standard deviation, same units.
    description: what the data is, for reports, e.g. "CIFAR-10 (JPEG q75)".
    class_names: the name of each label, e.g. "airplane"; the label's number where
      the dataset names none.
    validation_images: uint8 NHWC examples held out of the train split
      (`validation.carve`), or None.
    validation_labels: their int32 labels, or None.
  """
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  augmentation: str
  mean: np.ndarray
  std: np.ndarray
  description: str = ''
  class_names: tuple[str, ...] = ()
  validation_images: np.ndarray | None = None
  validation_labels: np.ndarray | None = None


def builder_class(name: str) -> type[builders.Builder]:
  """The TFDS builder class of a dataset name."""
  if name not in _BUILDERS:
    raise DataError(f'unknown dataset {name!r}; choose one of: {", ".join(DATASET_NAMES)}')
  return _BUILDERS[name]


def description(name: str, manual_dir) -> str:
  """What `name` is, for reports; an image folder's names the folder it came from."""
  return _DESCRIPTIONS[name].format(manual_dir=manual_dir)
