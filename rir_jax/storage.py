"""Where a run's files live: a local folder or a `gs://bucket/folder` URL.

Local paths stay `pathlib.Path`; `gs://` URLs become `etils.epath.Path` (gcsfs underneath),
which has the same methods, so the rest of the project writes one code path for both.
What differs is here:

- Google Cloud Storage has no rename: a new object replaces the old one whole, and a
  reader sees either, never a mix. `write_atomic` uses that instead of rename.
- Objects cannot be appended to. `open_log` gives a file-like log that, on gs://, holds
  the object's text in memory and uploads all of it on every flush: each flush leaves a
  whole object of whole lines (no torn last line, unlike a local file after a power cut).
  One upload per metrics line; GCS allows about one update per second to one object, and
  gcsfs retries the ones it refuses (HTTP 429) after a pause.
- Orbax writes checkpoints to gs:// through TensorStore, natively; TensorBoard event
  files go through tensorboardX's own gs:// writer (google-cloud-storage).

Credentials are the environment's (Application Default Credentials: a TPU VM's service
account, or `gcloud auth application-default login`). For a local emulator, gcsfs and
google-cloud-storage read STORAGE_EMULATOR_HOST, TensorStore TENSORSTORE_GCS_HTTP_URL.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import re
from typing import Union

from etils import epath

GCS_PREFIX = "gs://"
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")  # a scheme, as RFC 3986 spells it

Path = Union[pathlib.Path, epath.Path]


class DamagedFile(ValueError):
  """A file that is there but does not read as what it should be: cut by a copy, edited."""


def read_json_object(path: Path) -> dict:
  """A JSON object file's content; FileNotFoundError where there is none, DamagedFile
  where it is cut, garbled, a folder or not an object."""
  try:
    content = json.loads(path.read_text())
  except FileNotFoundError:
    raise
  except (OSError, ValueError) as error:  # a folder; bad UTF-8 or JSON
    raise DamagedFile(f"{path} is damaged ({type(error).__name__}: {error})") from error
  if not isinstance(content, dict):
    raise DamagedFile(f"{path} is damaged (not a JSON object)")
  return content


class UnsupportedURL(ValueError):
  """A URL of storage other than gs:// (s3://, https://, file://)."""


def check_supported(text: str | os.PathLike) -> None:
  """Raises UnsupportedURL for a URL other than gs://. Read as a local path, `s3://b/run`
  would become a folder named `s3:` in the current directory, and `https://host/x.png` a
  file reported missing under a name the user never typed (`https:/host/x.png`)."""
  text = os.fspath(text)
  match = _URL.match(text)
  if match is None or text.startswith(GCS_PREFIX):
    return
  scheme = match.group(1)
  if scheme.lower() == "file":
    hint = f"give the path itself ({text[len(match.group(0)):]})"
  elif scheme.lower() == "gs":
    hint = "write gs:// in lower case"
  else:
    hint = "copy or mount it on this machine and give the local path"
  raise UnsupportedURL(f"{text}: rir-jax reads and writes local paths and gs:// URLs, not "
                       f"{scheme}:// ones; {hint}")


def as_path(text: str | os.PathLike) -> Path:
  """A gs:// URL as an epath.Path, anything else as a local pathlib.Path; UnsupportedURL
  for another URL."""
  check_supported(text)
  text = os.fspath(text)
  return epath.Path(text) if is_remote(text) else pathlib.Path(text)


def user_path(text: str) -> Path:
  """A path from the command line: a gs:// URL, or a local path with ~ expanded."""
  path = as_path(text)
  return path if is_remote(path) else path.expanduser()


def is_remote(path: str | os.PathLike) -> bool:
  return os.fspath(path).startswith(GCS_PREFIX)


def _bucket_of(path: str | os.PathLike) -> str:
  return os.fspath(path)[len(GCS_PREFIX):].split("/", 1)[0]


def absolute(path: Path) -> Path:
  """Local paths made absolute; gs:// URLs as they are (epath would read them as local)."""
  return path if is_remote(path) else path.resolve()


def check_bucket(path: Path) -> None:
  """Raises FileNotFoundError unless the bucket of a gs:// path exists and can be listed;
  also where asking fails (no credentials, no network), whose reason it gives on one line.

  Writing is only tried by the run itself: a probe object would already change the bucket.
  """
  bucket = _bucket_of(path)
  if not bucket:
    raise FileNotFoundError(f"{path} names no bucket; use gs://BUCKET/FOLDER")
  import gcsfs  # Only runs on gs:// need it; epath's gs:// backend is gcsfs too.
  try:
    exists = gcsfs.GCSFileSystem().exists(bucket)
  except Exception as error:  # noqa: BLE001 - credentials, network: all mean "cannot use"
    raise FileNotFoundError(f"bucket gs://{bucket} cannot be reached ({type(error).__name__}: "
                            f"{' '.join(str(error).split())})") from error
  if not exists:
    raise FileNotFoundError(f"bucket gs://{bucket} does not exist or cannot be read with "
                            "this machine's credentials")


def find_files(path: Path) -> dict[str, tuple[str, Path]]:
  """{name relative to `path`: (version, path)} of every object under a gs:// folder.

  The version (the object's generation, a number GCS changes on every write, and its
  size) tells whether an object changed since it was last seen.
  """
  import gcsfs
  root = os.fspath(path)[len(GCS_PREFIX):].rstrip("/")
  found = gcsfs.GCSFileSystem().find(root, detail=True)
  return {name[len(root) + 1:]: (f"{info.get('generation')}:{info['size']}",
                                 epath.Path(GCS_PREFIX + name))
          for name, info in found.items() if info.get("type") != "directory"}


def write_atomic(path: Path, content: str | bytes) -> None:
  """Replaces `path` with `content` so that a reader, or a kill, never sees half of it."""
  if is_remote(path):
    _write(path, content)  # one object upload: all or nothing
    return
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # writers never share one
  try:
    _write(tmp, content)
    tmp.replace(path)
  except OSError:  # a full disk leaves neither a cut file nor a .tmp
    tmp.unlink(missing_ok=True)
    raise


def _write(path: Path, content: str | bytes) -> None:
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)


def open_log(path: Path):
  """A text log to append lines to: a local file, or a gs:// object rewritten on flush."""
  if is_remote(path):
    return _ObjectLog(path)
  return open(path, "a", encoding="utf-8")


class _ObjectLog(io.StringIO):
  """Appends in memory; `flush` uploads the whole text as one object (see module doc)."""

  def __init__(self, path: epath.Path):
    super().__init__(path.read_text() if path.exists() else "")
    self.seek(0, io.SEEK_END)
    self._path = path
    self._uploaded = self.tell()

  def flush(self) -> None:
    if self.tell() != self._uploaded:
      self._path.write_text(self.getvalue())
      self._uploaded = self.tell()

  def close(self) -> None:
    if not self.closed:
      self.flush()
    super().close()
