"""TFDS builders of MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 that need no TensorFlow.

Each writes array_record files (read back with `as_data_source`) with the same
splits, sizes, image shapes and labels as TFDS's official builder, under a name
of its own (`rir_mnist`, ...) so the two never collide in TFDS's registry. The
examples keep the original files' order (MNIST train starts 5, 0, 4, 1, 9).

Sources: the original files in a manual folder, or else the canonical URLs
through TFDS's download manager, which checks the registered sizes and sha256.
"""
import pathlib
import socket
import threading
import urllib.parse

import numpy as np
import tensorflow_datasets as tfds

from rir_jax.data import formats
from rir_jax.data.errors import DataError

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')


_CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/'


def _gz_urls(base: str, files: dict[str, str]) -> dict[str, str]:
  return {key: f'{base}{name}.gz' for key, name in files.items()}


def _url_infos(base: str, files: dict[str, tuple[int, str]]):
  """TFDS's checksum registry entries of files (name -> (size, sha256)) under a base URL."""
  return {f'{base}{name}': tfds.download.checksums.UrlInfo(size=size, checksum=sha256,
                                                           filename=name)
          for name, (size, sha256) in files.items()}


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What the project's builders share: a manual folder first, else a checked download.

  Subclasses set URLS (key -> url), url_infos (their checksums, which TFDS's
  download manager verifies), EXPECTED (the manual files, in words), and
  implement `find_manual_files` and `_splits`.
  """
  URLS: dict[str, str] = {}
  EXPECTED = ''

  @classmethod
  def create(cls, data_dir: str, manual_dir: str | None) -> 'Builder':
    del manual_dir  # Only builders whose prepared data depends on it use it.
    return cls(data_dir=data_dir, file_format='array_record')

  @classmethod
  def find_manual_files(cls, folder: pathlib.Path) -> dict[str, pathlib.Path] | None:
    """The source files in `folder` (key -> path), or None when some are missing."""
    raise NotImplementedError

  def _splits(self, files: dict[str, pathlib.Path]) -> dict:
    """Split name -> example generator, reading and checking `files` first."""
    raise NotImplementedError

  def _keep_written(self, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Keeps a split's arrays as they are written. Their images are stored as PNG, which
    is lossless, so these are what decoding the prepared split gives back; loader.prepare
    caches them as that, instead of decoding every image again (half of preparing MNIST)."""
    self.written_arrays = {**getattr(self, 'written_arrays', {}),
                           split: (np.asarray(images, np.uint8), np.asarray(labels, np.int32))}

  @classmethod
  def public_name(cls) -> str:
    """The name users know it by (rir_mnist -> mnist)."""
    return cls.name.removeprefix('rir_')

  def _split_generators(self, dl_manager):
    return self._splits(self._manual_files(dl_manager) or self._download(dl_manager))

  def _manual_files(self, dl_manager):
    try:
      folder = dl_manager.manual_dir
    except AssertionError:  # TFDS's way of saying the manual folder is absent or empty.
      return None
    return self.find_manual_files(pathlib.Path(folder))

  def _download(self, dl_manager):
    if not self.URLS:
      raise DataError(f'{self.public_name()} cannot be downloaded: pass --manual_dir, a folder '
                      f'holding {self.EXPECTED}')
    # TFDS's own manager retries for minutes offline: fail at once where no host answers.
    real = isinstance(dl_manager, tfds.download.DownloadManager)
    unreachable = _unreachable(self.URLS.values()) if real else None
    if unreachable:
      raise DataError(f'could not download {self.public_name()}: {unreachable}; without internet '
                      f'pass --manual_dir, a folder holding {self.EXPECTED}')
    try:
      paths = dl_manager.download(self.URLS)
    except Exception as e:  # pylint: disable=broad-except
      # Network, proxy or checksum failures are the user's environment, not a bug here.
      reason = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise DataError(f'could not download {self.public_name()} ({type(e).__name__}: {reason}); '
                      f'without internet pass --manual_dir, a folder holding {self.EXPECTED}'
                      ) from None
    return {key: pathlib.Path(path) for key, path in paths.items()}


def _unreachable(urls, timeout_s: float = 4.0) -> str | None:
  """Why the URLs' hosts cannot be reached (None: they can), in seconds at most.

  TFDS's downloader retries for minutes on a machine without network; a name that does
  not resolve or a port that does not answer says as much at once.
  """
  for host, port in sorted({_host_port(url) for url in urls}):
    found = []
    # Name lookups have no timeout of their own: a daemon thread never holds up the exit.
    lookup = threading.Thread(target=_lookup, args=(host, port, found), daemon=True)
    lookup.start()
    lookup.join(timeout_s)
    if not found:
      return f'looking up {host} took over {timeout_s:.0f} s (no network?)'
    if isinstance(found[0], OSError):
      return f'cannot resolve {host} ({found[0].strerror or found[0]}; no network?)'
    try:
      socket.create_connection(found[0], timeout=timeout_s).close()
    except OSError as e:
      return f'cannot connect to {host}:{port} ({e.strerror or e})'
  return None


def _lookup(host: str, port: int, found: list) -> None:
  try:
    found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][:2])
  except OSError as e:
    found.append(e)


def _host_port(url: str) -> tuple[str, int]:
  parts = urllib.parse.urlsplit(url)
  return parts.hostname or '', parts.port or (443 if parts.scheme == 'https' else 80)


class RirMnist(Builder):
  """MNIST: 60,000 + 10,000 handwritten digits, 28x28x1."""
  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'The four MNIST IDX files, gzipped or not.'
  _URL = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
  _FILES = {
      'train_images': 'train-images-idx3-ubyte',
      'train_labels': 'train-labels-idx1-ubyte',
      'test_images': 't10k-images-idx3-ubyte',
      'test_labels': 't10k-labels-idx1-ubyte',
  }
  _SIZES = {'train': 60_000, 'test': 10_000}
  # Of the decompressed files: the content is checked, whatever wraps it.
  _SHA256 = {
      'train_images': 'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
      'train_labels': '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
      'test_images': '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
      'test_labels': 'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
  }
  _LABEL_NAMES = None
  URLS = _gz_urls(_URL, _FILES)
  EXPECTED = ', '.join(_FILES.values()) + ' (each may be .gz)'
  url_infos = _url_infos(_URL, {
      'train-images-idx3-ubyte.gz':
          (9912422, '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609'),
      'train-labels-idx1-ubyte.gz':
          (28881, '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c'),
      't10k-images-idx3-ubyte.gz':
          (1648877, '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6'),
      't10k-labels-idx1-ubyte.gz':
          (4542, 'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6'),
  })

  def _info(self):
    label = (tfds.features.ClassLabel(names=self._LABEL_NAMES) if self._LABEL_NAMES
             else tfds.features.ClassLabel(num_classes=10))
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': label,
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True)

  @classmethod
  def find_manual_files(cls, folder):
    files = {}
    for key, name in cls._FILES.items():
      found = [folder / n for n in (name, name + '.gz') if (folder / n).is_file()]
      if not found:
        return None
      files[key] = found[0]
    return files

  def _splits(self, files):
    arrays = {}
    for split, size in self._SIZES.items():
      images = formats.read_idx(files[f'{split}_images'], shape=(size, 28, 28),
                                sha256=self._SHA256[f'{split}_images'])
      labels = formats.read_idx(files[f'{split}_labels'], shape=(size,),
                                sha256=self._SHA256[f'{split}_labels'])
      arrays[split] = self._generate_examples(images[..., None], labels)
      self._keep_written(split, images[..., None], labels)
    return arrays

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': formats.encode_png(image), 'label': int(label)}


class RirFashionMnist(RirMnist):
  """Fashion-MNIST: 60,000 + 10,000 Zalando article images, 28x28x1, 10 classes."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'The four Fashion-MNIST IDX files, gzipped or not.'
  _URL = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'
  _SHA256 = {
      'train_images': 'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
      'train_labels': 'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
      'test_images': '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
      'test_labels': '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34',
  }
  _LABEL_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                  'Sneaker', 'Bag', 'Ankle boot')
  URLS = _gz_urls(_URL, RirMnist._FILES)
  url_infos = _url_infos(_URL, {
      'train-images-idx3-ubyte.gz':
          (26421880, '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84'),
      'train-labels-idx1-ubyte.gz':
          (29515, 'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845'),
      't10k-images-idx3-ubyte.gz':
          (4422102, '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073'),
      't10k-labels-idx1-ubyte.gz':
          (5148, '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5'),
  })


class RirCifar10(Builder):
  """CIFAR-10: 50,000 + 10,000 colour images, 32x32x3, 10 classes."""
  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'cifar-10-binary.tar.gz or cifar-10-python.tar.gz.'
  _LAYOUT = formats.CIFAR10
  URLS = {'archive': f'{_CIFAR_URL}cifar-10-binary.tar.gz'}
  EXPECTED = ' or '.join(_LAYOUT.archives)
  url_infos = _url_infos(_CIFAR_URL, {
      'cifar-10-binary.tar.gz':
          (170052171, 'c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd'),
  })

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'image': tfds.features.Image(shape=(32, 32, 3)),
            **self._label_features(),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True)

  def _label_features(self):
    return {'label': tfds.features.ClassLabel(names=CIFAR10_CLASSES)}

  @classmethod
  def find_manual_files(cls, folder):
    for name in cls._LAYOUT.archives:
      if (folder / name).is_file():
        return {'archive': folder / name}
    return None

  def _splits(self, files):
    splits = formats.read_cifar(files['archive'], self._LAYOUT)
    for split, (images, labels) in splits.items():
      self._keep_written(split, images, labels['label'])
    return {split: self._generate_examples(split, images, labels)
            for split, (images, labels) in splits.items()}

  def _generate_examples(self, split, images, labels):
    for i, image in enumerate(images):
      example = {key: int(values[i]) for key, values in labels.items()}
      yield i, {'id': f'{split}_{i:05d}', 'image': formats.encode_png(image), **example}


class RirCifar100(RirCifar10):
  """CIFAR-100: 50,000 + 10,000 colour images, 32x32x3, 100 fine and 20 coarse classes."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'cifar-100-binary.tar.gz or cifar-100-python.tar.gz.'
  _LAYOUT = formats.CIFAR100
  URLS = {'archive': f'{_CIFAR_URL}cifar-100-binary.tar.gz'}
  EXPECTED = ' or '.join(_LAYOUT.archives)
  url_infos = _url_infos(_CIFAR_URL, {
      'cifar-100-binary.tar.gz':
          (168513733, '58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec'),
  })

  def _label_features(self):
    return {'label': tfds.features.ClassLabel(num_classes=100),
            'coarse_label': tfds.features.ClassLabel(num_classes=20)}
