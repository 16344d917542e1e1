"""Shared test setup: eight fake CPU devices, so sharding is exercised on any machine."""
import contextlib
import fcntl
import os
import pathlib
import shutil
import subprocess
import tempfile

# XLA reads this once, when jax first initialises its backend: set it before anything imports jax.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# With fewer cores than fake devices, XLA's CPU thread pool can be too small for all eight
# devices to meet in a collective, and the step hangs: give it a thread per device.
os.environ.setdefault("PJRT_NPROC", "8")
# One folder for what the whole session shares, every pytest-xdist worker included (the
# workers inherit the environment of the controller, which imports this file first); the
# process that made it removes it at the end.
_MAKES_SHARED_DIR = "RIR_JAX_TEST_SHARED_DIR" not in os.environ
SHARED_DIR = pathlib.Path(os.environ.setdefault("RIR_JAX_TEST_SHARED_DIR",
                                                tempfile.mkdtemp(prefix="rir_jax_tests_")))
# Many tests compile the same small programs (also in subprocesses, which inherit this):
# JAX's persistent cache compiles each once per session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(SHARED_DIR / "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# gcsfs reads this when first imported, whichever test imports it first: the plain file
# system, as the GCS emulator of the gs:// tests needs (tests/gcs_emulator.py says why).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import pytest  # noqa: E402

from rir_jax import compile_cache  # noqa: E402

# As launch.py does: keys that hold across processes, so that a sharded program on the CPU
# kernel library, compiled once, is found again by every later test and worker.
compile_cache.stable_keys()

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_unconfigure(config):
  if _MAKES_SHARED_DIR:
    shutil.rmtree(SHARED_DIR, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
  """Files with slow tests first, each file's tests together, and a file whose tests share
  a module-scoped fixture of its own on one pytest-xdist worker (`pytest -n auto --dist
  loadgroup`), so that the fixture (often minutes of training runs) is set up once, not
  once per worker. On several workers the last minutes then hold many short tests to
  share out instead of one long test that the other workers wait for."""
  slow_files = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow_files)
  for item in items:
    if _uses_a_module_fixture_of_its_own(item):
      item.add_marker(pytest.mark.xdist_group(item.path.stem))


def _uses_a_module_fixture_of_its_own(item) -> bool:
  """Whether `item` uses a module-scoped fixture defined in its own file (this file's are
  cheap: a config file written, synthetic images generated)."""
  definitions = getattr(item, "_fixtureinfo", None)
  module = getattr(item, "module", None)
  return definitions is not None and module is not None and any(
      defs and defs[-1].scope == "module" and defs[-1].func.__module__ == module.__name__
      for defs in definitions.name2fixturedefs.values())


@contextlib.contextmanager
def _one_worker_at_a_time(path: pathlib.Path):
  """Holds an exclusive lock on `path` (created), so that of several pytest-xdist workers
  one prepares what the others then reuse."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real MNIST / Fashion-MNIST / JPEG-CIFAR files kept beside the repository."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"{SHARED_DATA} not present")
  return SHARED_DATA


@pytest.fixture(scope="session")
def prepared_data_dir(shared_data) -> pathlib.Path:
  """A TFDS data_dir with MNIST and Fashion-MNIST prepared once, offline, for the session.

  A lock per dataset: a worker prepares one, or waits for the worker preparing it, then
  finds it prepared. Odd-numbered workers take the datasets in the other order, so that
  two workers that start at once prepare one each (half a minute each on a small CPU)."""
  from rir_jax.data import loader
  path = SHARED_DIR / "tfds"
  names = ["mnist", "fashion_mnist"]
  if int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % 2:
    names.reverse()
  for name in names:
    with _one_worker_at_a_time(SHARED_DIR / f"tfds_{name}.lock"):
      loader.prepare(name, data_dir=path, manual_dir=shared_data / name)
  return path


@pytest.fixture(scope="session")
def cpu_kernel_library() -> None:
  """Builds the project's CPU kernel library (rir_jax.kernels.build) once: seconds, then
  cached on disk. Skips the test where it cannot build or load, saying why."""
  from rir_jax.kernels import build
  available, reason = build.is_available()
  if not available:
    pytest.skip(f"CPU kernel library unavailable: {reason}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> pathlib.Path:
  """launch_helpers' tiny config file (a CNN on synthetic images, 12 steps)."""
  from launch_helpers import write_tiny_config
  return write_tiny_config(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="module")
def synthetic():
  """The synthetic dataset (random CIFAR-shaped images), loaded once per module."""
  from rir_jax import data
  return data.load_dataset("synthetic")


@pytest.fixture
def mounts():
  """Folders a test mounted (disk_helpers.mount_tmpfs), unmounted after it."""
  mounted = []
  yield mounted
  for folder in reversed(mounted):
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)
