"""Users' picture files as 8-bit pixels, upright, in the mode a model was trained on.

Pillow's `convert` alone gets three kinds of file wrong without a word: it clips 16-bit
pixels at 255 (a 16-bit grayscale PNG comes out all but white), float pixels at 0 and 1
(all but black), and it ignores the EXIF orientation every viewer applies to a camera's
photo. Here a picture is turned upright first, 16-bit pixels are scaled to 8 bits, and
float pixels, whose range no file states, are refused. Folders searched for pictures skip
hidden files and folders.
"""
from __future__ import annotations

import contextlib
import logging
import pathlib
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps

# Modes whose pixels span 0..65535: Pillow opens 16-bit PNGs and TIFFs as "I;16*", and
# older Pillows (or a conversion of "I;16") give 32-bit "I" for the same files.
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
log = logging.getLogger(__name__)


def hidden(parts: tuple[str, ...]) -> bool:
  """Whether a path's parts below the folder searched name a hidden file or folder: macOS's
  `._name.jpg` copies of metadata, Jupyter's `.ipynb_checkpoints/`, none of them pictures
  (or classes) of the user's."""
  return any(part.startswith(".") for part in parts)


_told: set[tuple] = set()  # Pillow's warnings already told, by where Pillow raises them


@contextlib.contextmanager
def warnings_named(name: str):
  """Pillow's warnings while reading a file (corrupt EXIF data, a large image) as one log
  line naming the file rather than Python's two lines naming Pillow's source; none where
  the file turns out unreadable, as the error that follows says so. Each is told once, as
  Python tells a warning once per place: a folder of a camera's photos is not a page."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    yield
  for warning in caught:
    if "PIL" not in pathlib.Path(warning.filename).parts:  # another library's: as Python would
      warnings.warn_explicit(warning.message, warning.category, warning.filename,
                             warning.lineno)
      continue
    where = (warning.category, warning.filename, warning.lineno)
    if where not in _told:
      _told.add(where)
      log.warning("%s: %s (told for the first picture only)", name,
                  " ".join(str(warning.message).split()))


def is_upright(image: Image.Image) -> bool:
  """Whether `image` shows as stored: no EXIF orientation asks a viewer to turn it."""
  return image.getexif().get(ExifTags.Base.Orientation, 1) == 1


def eight_bit(image: Image.Image, mode: str) -> Image.Image:
  """`image` upright, as 8-bit pixels of `mode` ("L" or "RGB").

  ValueError (one line) where it cannot be made so: float pixels, 16-bit ones out of range,
  or a mode Pillow cannot convert.
  """
  image = ImageOps.exif_transpose(image)
  if image.mode in _SIXTEEN_BIT:
    pixels = np.asarray(image).astype(np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
      raise ValueError(f"its {image.mode} pixels lie outside 0..65535")
    image = Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8))
  elif image.mode == "F":
    raise ValueError("its pixels are floating point, whose range no file states: "
                     "save it with 8- or 16-bit pixels")
  elif image.mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")  # how Pillow asks for palette transparency to be read
  return image.convert(mode)
