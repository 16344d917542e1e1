"""Predicts the classes of image files with a trained model.

  python -m rir_jax.predict --workdir=DIR_OR_EXPORT IMAGE_OR_FOLDER... [--top_k=5] [--json]
      [--step=best|last|N] [--resize]

Each picture is turned upright as its EXIF orientation asks, its 16-bit pixels scaled to 8
bits, then converted as the training data was (grayscale or RGB, then the training split's
normalisation); one of another size is refused unless --resize. Prints, per image,
the top-k class names with probabilities (--json: one JSON object per line). Exit codes:
0 done, 2 bad usage or an unreadable image (nothing is predicted then), 1 the output could
not be written (a full disk), 141 its reader went away (`| head`). A gs:// workdir,
picture or folder is read in place.
"""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
from PIL import Image, UnidentifiedImageError

from rir_jax import cli, errors, inference, loading, storage
from rir_jax.data import pictures
from rir_jax.preprocess import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_BATCH = 256


def _parser() -> cli.Parser:
  parser = cli.Parser(prog="python -m rir_jax.predict", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, type=cli.path_argument,
                      help="a training workdir or a file written by rir_jax.export")
  parser.add_argument("paths", nargs="+", type=cli.path_argument, metavar="IMAGE_OR_FOLDER")
  parser.add_argument("--step", default="best", help="best (default), last or a step number")
  parser.add_argument("--top_k", type=int, default=5)
  parser.add_argument("--json", action="store_true", help="one JSON object per line")
  parser.add_argument("--resize", action="store_true",
                      help="resize pictures of another size instead of refusing them")
  return parser


def image_files(paths: list[storage.Path]) -> list[storage.Path]:
  """The files named, and the pictures inside the folders named (sorted, recursively; hidden
  files and folders skipped)."""
  files = []
  for path in paths:
    if storage.is_remote(path):
      try:
        storage.check_bucket(path)
      except FileNotFoundError as error:
        raise errors.UsageError(str(error)) from None
    if path.is_dir():
      found = [file for name, file in sorted(_files_under(path).items())
               if file.suffix.lower() in IMAGE_SUFFIXES
               and not pictures.hidden(pathlib.PurePosixPath(name).parts)]
      if not found:
        raise errors.UsageError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
      files += found
    elif path.is_file():
      files.append(path)
    else:
      raise errors.UsageError(f"{path} does not exist")
  return files


def _files_under(folder: storage.Path) -> dict[str, storage.Path]:
  """{name relative to `folder`: path} of every file below it, in a bucket too (where
  one listing finds them all: a walk would ask once per folder)."""
  if storage.is_remote(folder):
    return {name: file for name, (_, file) in storage.find_files(folder).items()}
  return {str(file.relative_to(folder)): file for file in folder.rglob("*") if file.is_file()}


def read_images(files: list[storage.Path], preprocess, *, resize: bool) -> np.ndarray:
  """uint8 NHWC, every file converted as the training data was; ImageError names a bad one."""
  arrays = []
  for file in files:
    try:
      with pictures.warnings_named(str(file)), file.open("rb") as data, Image.open(data) as image:
        arrays.append(preprocess.image_array(image, resize=resize, name=str(file)))
    except ImageError:
      raise
    # Pillow's errors for a broken, truncated or oversized (decompression bomb) file.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as error:
      raise ImageError(f"{file} is not a readable image ({type(error).__name__}: {error})") from None
  return np.stack(arrays)


def top_k(logits: np.ndarray, class_names, k: int) -> list[list[tuple[str, float]]]:
  """Per row, the k most probable (class name, probability), most probable first."""
  shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
  probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
  order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
  return [[(class_names[c], float(p[c])) for c in row] for row, p in zip(order, probs)]


def main(argv: list[str]) -> int:
  cli.quiet_libraries()
  try:
    args = _parser().parse_args(argv)
    if args.top_k < 1:
      raise errors.UsageError(f"--top_k={args.top_k} must be >= 1")
    files = image_files(args.paths)
    trained = loading.load_trained(args.workdir, args.step)
    images = read_images(files, trained.preprocess, resize=args.resize)
  except (errors.UsageError, *cli.USAGE_ERRORS) as error:
    errors.fail(error)
  batch = -(-min(_BATCH, len(images)) // jax.device_count()) * jax.device_count()
  logits = inference.logits(trained, images, batch_size=batch)
  k = min(args.top_k, trained.preprocess.num_classes)
  for file, best in zip(files, top_k(logits, trained.preprocess.class_names, k)):
    if args.json:
      print(json.dumps({"file": str(file), "top_k": [{"class": c, "probability": p}
                                                     for c, p in best]}))
    else:
      print(f"{file}: " + ", ".join(f"{c} {p:.4f}" for c, p in best))
  return 0


if __name__ == "__main__":
  cli.run(main)
