"""TFDS builders for class-per-subfolder image trees: users' own data and JPEG CIFAR-10.

A tree is `root/{train,test}/<class>/*.png|jpg`, given as a folder or as one
tar archive of it. Classes are the train split's subfolders sorted by name.
Hidden files and class folders (`._x.jpg`, `.ipynb_checkpoints/`) are skipped.
Every image is decoded once while preparing, so a corrupt file is refused with
its name; all images must share one size and are stored as RGB.
"""
import hashlib
import io
import os
import pathlib
import re
import tarfile

from PIL import Image
import tensorflow_datasets as tfds

from rir_jax.data import builders
from rir_jax.data import formats
from rir_jax.data import pictures
from rir_jax.data.errors import DataError

SPLITS = ('train', 'test')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
_ARCHIVE_SUFFIXES = ('.tar', '.tar.gz', '.tgz')


def find_tree(folder: pathlib.Path) -> pathlib.Path | None:
  """Where the tree is: `folder` or a subfolder holding train/ and test/, else one archive."""
  if not folder.is_dir():
    return None
  for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
    if all((candidate / split).is_dir() for split in SPLITS):
      return candidate
  archives = sorted(p for p in folder.iterdir() if p.name.endswith(_ARCHIVE_SUFFIXES))
  return archives[0] if len(archives) == 1 else None


def content_key(folder: pathlib.Path) -> bytes:
  """What the prepared data depends on: every file's path, size and modification time
  (by name, without reading the images). An added, removed, replaced or edited image
  changes it."""
  entries = []
  for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
    dirnames.sort()
    for filename in sorted(filenames):
      path = os.path.join(dirpath, filename)
      try:
        info = os.stat(path)
      except OSError:  # a dangling link: not an image either way
        continue
      entries.append(f'{os.path.relpath(path, folder)}\0{info.st_size}\0{info.st_mtime_ns}')
  return '\n'.join(entries).encode()


def read_tree(tree: pathlib.Path) -> dict[str, list[tuple[str, str, bytes | pathlib.Path]]]:
  """Split -> [(class, file name, content or path)], sorted by class then file name."""
  if tree.is_dir():
    entries = [(split, path.parent.name, path.name, path)
               for split in SPLITS for path in (tree / split).glob('*/*')
               if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
               and not pictures.hidden((path.parent.name, path.name))]
  else:
    entries = _archive_entries(tree)
  return {split: sorted(e[1:] for e in entries if e[0] == split) for split in SPLITS}


def _archive_entries(archive: pathlib.Path):
  """(split, class, file name, content) of each image in a tar archive of a tree."""
  data = formats.read_content(archive)
  entries = []
  try:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
      for member in tar:
        parts = member.name.split('/')
        if (member.isfile() and len(parts) >= 3 and parts[-3] in SPLITS
            and os.path.splitext(parts[-1])[1].lower() in IMAGE_SUFFIXES
            and not pictures.hidden(tuple(parts[-2:]))):
          entries.append((*parts[-3:], tar.extractfile(member).read()))
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(f'{archive}: corrupt or truncated tar archive ({e})') from None
  return entries


def checked_image(source: bytes | pathlib.Path, name: str) -> tuple[bytes, tuple[int, ...]]:
  """Decodes an image fully; returns RGB PNG or JPEG bytes, upright, and its HxWx3 shape.

  An 8-bit RGB PNG or JPEG that shows as stored is kept as it is (a JPEG not re-encoded);
  any other is converted as predict converts a picture (rir_jax.data.pictures) to PNG.
  """
  data = source if isinstance(source, bytes) else source.read_bytes()
  try:
    with pictures.warnings_named(name), Image.open(io.BytesIO(data)) as image:
      image.load()
      if image.mode == 'RGB' and image.format in ('PNG', 'JPEG') and pictures.is_upright(image):
        return data, (image.height, image.width, 3)
      rgb = pictures.eight_bit(image, 'RGB')
      buffer = io.BytesIO()
      rgb.save(buffer, format='png')
      return buffer.getvalue(), (rgb.height, rgb.width, 3)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f'{name}: not a readable image ({e})') from None


class RirImageFolder(builders.Builder):
  """Images from a class-per-subfolder tree: root/{train,test}/<class>/*.png|jpg."""
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.1.0': 'Pictures turned upright by their EXIF orientation, 16-bit '
                            'pixels scaled to 8 bits instead of clipped.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'A tree root/{train,test}/<class>/*.png|jpg.'
  EXPECTED = ('train/<class>/*.png|jpg and test/<class>/*.png|jpg (or one .tar/.tar.gz '
              'archive of them)')
  _IMAGE_SHAPE = (None, None, 3)
  _CLASSES = None

  @classmethod
  def create(cls, data_dir, manual_dir):
    """One TFDS config per tree and content, named after its folder: trees never share
    prepared data, and a tree changed since it was prepared is prepared anew."""
    if manual_dir is None:
      raise DataError(f'{cls.public_name()} needs --manual_dir, a folder holding {cls.EXPECTED}')
    root = os.path.realpath(manual_dir)
    name = re.sub(r'\W', '_', os.path.basename(root)) or 'root'
    digest = hashlib.sha256(root.encode() + content_key(pathlib.Path(root))).hexdigest()[:8]
    config = tfds.core.BuilderConfig(name=f'{name}-{digest}', description=f'Images under {root}')
    return cls(data_dir=data_dir, config=config, file_format='array_record')

  def _info(self):
    label = (tfds.features.ClassLabel(names=self._CLASSES) if self._CLASSES
             else tfds.features.ClassLabel())  # Names are the tree's, set in _splits.
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=self._IMAGE_SHAPE),
            'label': label,
            'image/filename': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True)

  @classmethod
  def find_manual_files(cls, folder):
    tree = find_tree(folder)
    return {'tree': tree} if tree else None

  def _splits(self, files):
    tree = read_tree(files['tree'])
    classes = sorted({label for label, _, _ in tree['train']})
    if not classes:
      raise DataError(f'{files["tree"]}: no images in train/<class>/ (expected {self.EXPECTED})')
    if len(classes) < 2:
      raise DataError(f'{files["tree"]}: one class ({classes[0]}) in train/; a classifier needs '
                      'at least two class folders')
    unknown = sorted({label for label, _, _ in tree['test']} - set(classes))
    if unknown:
      raise DataError(f'{files["tree"]}: test classes {unknown} have no train images')
    self._set_classes(files['tree'], classes)
    shape = self._IMAGE_SHAPE
    if None in shape:  # The first image sets the size all others must have.
      label, name, source = tree['train'][0]
      shape = checked_image(source, f'train/{label}/{name}')[1]
    return {split: self._generate_examples(split, entries, classes, shape)
            for split, entries in tree.items()}

  def _set_classes(self, tree, classes):
    self.info.features['label'].names = classes

  def _generate_examples(self, split, entries, classes, shape):
    index = {label: i for i, label in enumerate(classes)}
    for i, (label, name, source) in enumerate(entries):
      filename = f'{label}/{name}'
      image, image_shape = checked_image(source, f'{split}/{filename}')
      if image_shape != shape:
        raise DataError(f'{split}/{filename}: image of shape {image_shape}, the others are '
                        f'{shape}; all images must have one size')
      yield i, {'image': image, 'label': index[label], 'image/filename': filename}


class RirCifar10Jpeg(RirImageFolder):
  """CIFAR-10 (JPEG q75): CIFAR-10's 50,000 + 10,000 images re-encoded as JPEG at quality 75.

  The pixels differ from CIFAR-10's, so accuracies on it are not comparable to
  published CIFAR-10 numbers: report them as "CIFAR-10 (JPEG q75)".
  """
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'cifar10_jpeg.tar.gz or its extracted tree.'
  EXPECTED = 'cifar10_jpeg.tar.gz, or its extracted tree {train,test}/<class>/*.jpg'
  # Its files are 8-bit RGB JPEGs without EXIF, which 1.1.0 prepares as 1.0.0 did.
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {}
  _IMAGE_SHAPE = (32, 32, 3)
  _CLASSES = builders.CIFAR10_CLASSES

  @classmethod
  def create(cls, data_dir, manual_dir):
    del manual_dir  # One fixed dataset: where its files came from does not matter.
    return cls(data_dir=data_dir, file_format='array_record')

  def _set_classes(self, tree, classes):
    if tuple(classes) != self._CLASSES:
      raise DataError(f'{tree}: classes {classes} are not CIFAR-10\'s {list(self._CLASSES)}')
