"""Shared test setup: eight fake CPU devices, so sharding is exercised on any machine."""
import os
import pathlib
import tempfile

# XLA reads this once, when jax first initialises its backend: set it before anything imports jax.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# With fewer cores than fake devices, XLA's CPU thread pool can be too small for all eight
# devices to meet in a collective, and the step hangs: give it a thread per device.
os.environ.setdefault("PJRT_NPROC", "8")
# Many tests compile the same small programs (also in subprocesses, which inherit this):
# JAX's persistent cache compiles each once per session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="rir_jax_xla_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# gcsfs reads this when first imported, whichever test imports it first: the plain file
# system, as the GCS emulator of the gs:// tests needs (tests/gcs_emulator.py says why).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(items):
  """Files with slow tests first, each file's tests kept together (so that a module's
  fixtures are set up once): run on several pytest-xdist workers (`pytest -n auto`),
  the last minutes then hold many short tests to share out instead of one long test
  that the other workers wait for."""
  slow_files = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real MNIST / Fashion-MNIST / JPEG-CIFAR files kept beside the repository."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"{SHARED_DATA} not present")
  return SHARED_DATA


@pytest.fixture(scope="session")
def prepared_data_dir(shared_data, tmp_path_factory) -> pathlib.Path:
  """A TFDS data_dir with MNIST and Fashion-MNIST prepared once, offline, for the session."""
  from rir_jax.data import loader
  path = tmp_path_factory.mktemp("tfds")
  for name in ("mnist", "fashion_mnist"):
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
