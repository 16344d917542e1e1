"""What a trained model expects of its input, kept with the model so nothing is recomputed.

The statistics are those of the split the model was trained on, measured once when
training started; a model loaded later normalises its inputs with exactly those numbers.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from rir_jax.data import augment, pictures

# The mode a picture is converted to, by the training images' channels.
_MODES = {1: "L", 3: "RGB"}


class ImageError(ValueError):
  """An image file that cannot be made into the model's input; one line, naming the file."""


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Turns uint8 NHWC images into the model's input: `model.apply(variables, preprocess(x))`.

  Attributes:
    dataset: the training data's name, e.g. "mnist".
    class_names: the name of each logit, in order.
    image_shape: (height, width, channels) of one training image.
    mean: per-channel mean of the training pixels, in [0, 1] units (pixel / 255).
    std: per-channel standard deviation, same units.
    dtype: the compute dtype the model was trained with ("float32" or "bfloat16").
  """
  dataset: str
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  dtype: str = "float32"

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def __call__(self, images) -> jax.Array:
    """(images / 255 - mean) / std: the same function training and its evals apply."""
    return augment.normalize(jnp.asarray(images), self.mean, self.std, jnp.dtype(self.dtype))

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, saved: dict) -> "Preprocess":
    return cls(dataset=saved["dataset"], class_names=tuple(saved["class_names"]),
               image_shape=tuple(saved["image_shape"]), mean=tuple(saved["mean"]),
               std=tuple(saved["std"]), dtype=saved.get("dtype", "float32"))

  def image_array(self, image: Image.Image, *, resize: bool, name: str) -> np.ndarray:
    """One picture as a uint8 HWC array shaped like the training images.

    The picture is turned upright as its EXIF orientation asks, 16-bit pixels are scaled
    to 8 bits and colour is converted as the training data was (grayscale or RGB); a
    picture of another size is resized (bilinear) only when `resize` is set, else refused.
    """
    height, width, channels = self.image_shape
    try:
      image = pictures.eight_bit(image, _MODES[channels])
    except ValueError as error:
      raise ImageError(f"{name}: {error}") from None
    if image.size != (width, height):
      if not resize:
        raise ImageError(f"{name} is {image.size[0]}x{image.size[1]}; the model takes "
                         f"{width}x{height} images: pass --resize to resize it")
      image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, np.uint8).reshape(height, width, channels)
