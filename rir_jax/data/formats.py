"""Readers of the original dataset files: MNIST's IDX files and CIFAR's archives.

They check content, not wrappers: gzip is recognised by its magic bytes, not by
the file name, so a re-compressed IDX file is accepted as long as what it holds
is right. Every failed check is a one-line DataError that names the file.
"""
import dataclasses
import gzip
import hashlib
import io
import math
import pickle
import tarfile
import zlib

import numpy as np
from PIL import Image

from rir_jax.data.errors import DataError

_GZIP_MAGIC = b'\x1f\x8b'
_IDX_UNSIGNED_BYTE = 0x08
_CIFAR_PIXELS = 32 * 32 * 3


def read_content(path) -> bytes:
  """Returns the bytes of `path`, decompressed when it is a gzip file."""
  with open(path, 'rb') as f:
    data = f.read()
  if data[:2] != _GZIP_MAGIC:
    return data
  try:
    return gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f'{path}: corrupt or truncated gzip file ({e})') from None


def read_idx(path, *, shape: tuple[int, ...], sha256: str | None = None) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (MNIST layout) and checks its shape.

  Args:
    path: the file, gzipped or not.
    shape: the dimensions the header must announce, e.g. (60000, 28, 28).
    sha256: if given, the digest the decompressed content must have.

  Returns:
    A uint8 array of `shape`.
  """
  data = read_content(path)
  if len(data) < 4 or data[:2] != b'\0\0' or data[2] != _IDX_UNSIGNED_BYTE:
    raise DataError(f'{path}: not an IDX file of unsigned bytes (bad magic number)')
  header_size = 4 + 4 * data[3]
  if len(data) < header_size:
    raise DataError(f'{path}: truncated IDX header')
  dims = tuple(int(d) for d in np.frombuffer(data, '>u4', count=data[3], offset=4))
  if dims != tuple(shape):
    raise DataError(f'{path}: IDX dimensions {dims}, expected {tuple(shape)}')
  expected_size = header_size + math.prod(dims)
  if len(data) != expected_size:
    raise DataError(
        f'{path}: truncated or padded ({len(data)} bytes, the header promises {expected_size})')
  if sha256 and hashlib.sha256(data).hexdigest() != sha256:
    raise DataError(f'{path}: content differs from the official file (sha256 mismatch)')
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(dims)


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of an HxWxC uint8 image (TFDS needs TensorFlow to encode arrays itself)."""
  pil_image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  buffer = io.BytesIO()
  pil_image.save(buffer, format='png')
  return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class CifarLayout:
  """Where a CIFAR archive keeps its splits and labels.

  Attributes:
    archives: accepted archive names, binary first (the one TFDS downloads).
    splits: split name -> member names without the binary version's '.bin'.
    labels: label feature -> number of classes, in the binary record's byte order.
    pickle_keys: label feature -> key of the python version's pickled dict.
  """
  archives: tuple[str, ...]
  splits: dict[str, tuple[str, ...]]
  labels: dict[str, int]
  pickle_keys: dict[str, bytes]


CIFAR10 = CifarLayout(
    archives=('cifar-10-binary.tar.gz', 'cifar-10-python.tar.gz'),
    splits={'train': tuple(f'data_batch_{i}' for i in range(1, 6)), 'test': ('test_batch',)},
    labels={'label': 10},
    pickle_keys={'label': b'labels'})
CIFAR100 = CifarLayout(
    archives=('cifar-100-binary.tar.gz', 'cifar-100-python.tar.gz'),
    splits={'train': ('train',), 'test': ('test',)},
    labels={'coarse_label': 20, 'label': 100},
    pickle_keys={'coarse_label': b'coarse_labels', 'label': b'fine_labels'})


def read_cifar(path, layout: CifarLayout) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
  """Reads a CIFAR archive, binary or python version, into split -> (images, labels).

  Images are NHWC uint8; labels maps each label feature to an int64 array.
  """
  members = _tar_members(path)
  binary = any(name.endswith('.bin') for name in members)
  splits = {}
  for split, names in layout.splits.items():
    parts = [_read_cifar_member(path, members, name, binary, layout) for name in names]
    images = np.concatenate([images for images, _ in parts])
    labels = {key: np.concatenate([labels[key] for _, labels in parts]) for key in layout.labels}
    splits[split] = (images, labels)
  return splits


def _tar_members(path) -> dict[str, bytes]:
  """Base name -> content of every regular file of a (gzipped) tar archive."""
  # Decompressing it all first checks gzip's CRC, which streaming through tarfile skips.
  data = read_content(path)
  try:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
      return {m.name.rsplit('/', 1)[-1]: tar.extractfile(m).read() for m in tar if m.isfile()}
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(f'{path}: corrupt or truncated tar archive ({e})') from None


def _read_cifar_member(path, members, name, binary, layout):
  """Images and labels of one batch file of a CIFAR archive."""
  member = name + '.bin' if binary else name
  if member not in members:
    raise DataError(f'{path}: has no member {member!r}; is it the right CIFAR archive?')
  if binary:
    images, labels = _parse_binary(path, member, members[member], layout)
  else:
    images, labels = _parse_pickle(path, member, members[member], layout)
  for key, num_classes in layout.labels.items():
    if labels[key].size and labels[key].max() >= num_classes:
      raise DataError(f'{path}: {member} has {key} {labels[key].max()} >= {num_classes}')
  return images, labels


def _parse_binary(path, member, raw, layout):
  """Records of label bytes then 3072 pixel bytes (the R, G and B planes)."""
  record_size = len(layout.labels) + _CIFAR_PIXELS
  if not raw or len(raw) % record_size:
    raise DataError(f'{path}: {member} is truncated ({len(raw)} bytes is not a whole number '
                    f'of {record_size}-byte records)')
  records = np.frombuffer(raw, np.uint8).reshape(-1, record_size)
  labels = {key: records[:, i].astype(np.int64) for i, key in enumerate(layout.labels)}
  return _planes_to_nhwc(records[:, len(layout.labels):]), labels


def _parse_pickle(path, member, raw, layout):
  """A pickled dict with b'data' (N x 3072 uint8) and label lists."""
  try:
    batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding='bytes').load()
    pixels = np.asarray(batch[b'data'], np.uint8)
    labels = {key: np.asarray(batch[k], np.int64) for key, k in layout.pickle_keys.items()}
  except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
    raise DataError(f'{path}: {member} is not a valid CIFAR pickle ({e!r})') from None
  if pixels.ndim != 2 or pixels.shape[1] != _CIFAR_PIXELS or any(
      len(v) != len(pixels) for v in labels.values()):
    raise DataError(f'{path}: {member} has data of shape {pixels.shape} that does not match '
                    f'its labels')
  return _planes_to_nhwc(pixels), labels


def _planes_to_nhwc(pixels: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles CIFAR's python batches without letting a file run arbitrary code."""
  # Whatever numpy module path the pickle names (numpy.core in the originals,
  # numpy._core in new ones), only these three constructors are handed out.
  _ALLOWED = {
      '_reconstruct': np.empty(0).__reduce__()[0],
      'ndarray': np.ndarray,
      'dtype': np.dtype,
  }

  def find_class(self, module, name):
    if module.split('.')[0] == 'numpy' and name in self._ALLOWED:
      return self._ALLOWED[name]
    raise pickle.UnpicklingError(f'{module}.{name} is not allowed in a CIFAR batch')
