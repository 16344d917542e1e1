"""The project's CPU kernel library: built with g++ on first use, cached, registered.

One shared library holds every XLA FFI handler the CPU path uses: oneDNN's
convolutions (`csrc/onednn_conv.cc`, against the oneDNN pip put in this environment:
`pip install onednn-cpu-tbb onednn-devel-cpu-tbb`) and batch norm's sums
(`csrc/batch_norm_kernels.cc`). It is compiled for this machine's CPU (`-march=native`)
and cached on disk under a key of its sources, jax, oneDNN, the flags and the CPU's
features, so a home directory shared by different machines holds one build each.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import logging
import threading

import jax

_HERE = pathlib.Path(__file__).parent
_SOURCES = (_HERE / "csrc" / "onednn_conv.cc", _HERE / "csrc" / "batch_norm_kernels.cc")
_CXXFLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c++17")
TARGETS = ("RirOnednnConvForward", "RirOnednnConvBackwardData",
           "RirOnednnConvBackwardWeights", "RirBatchNormStats",
           "RirBatchNormWeightedStats", "RirBatchNormGradSums")
_load_lock = threading.Lock()
log = logging.getLogger(__name__)


def _compile_command(output: str) -> list[str]:
  lib = os.path.join(sys.prefix, "lib")
  # DT_RPATH (not RUNPATH) also serves libdnnl's own dependencies in `lib`.
  return ["g++", *_CXXFLAGS, f"-I{jax.ffi.include_dir()}",
          f"-I{os.path.join(sys.prefix, 'include')}", *map(str, _SOURCES), "-o", output,
          f"-L{lib}", "-ldnnl", f"-Wl,--disable-new-dtags,-rpath,{lib}"]


def _cpu_features() -> bytes:
  """The CPU's feature flags (Linux), which `-march=native` compiles for."""
  try:
    with open("/proc/cpuinfo", "rb") as f:
      return next((line for line in f if line.startswith((b"flags", b"Features"))), b"")
  except OSError:
    return b""


def cpu_flags() -> set[str]:
  """The CPU's feature flags as names (Linux; empty elsewhere): avx2, avx512f, ..."""
  return set(_cpu_features().decode(errors="replace").partition(":")[2].split())


def _library_path() -> pathlib.Path:
  """Where the library for these sources, jax, oneDNN, flags and CPU lives."""
  key = hashlib.sha256()
  for source in _SOURCES:
    key.update(source.read_bytes())
  key.update(jax.__version__.encode())
  key.update(" ".join(_compile_command("")).encode())
  key.update(_cpu_features())
  # Another oneDNN (version, or threading runtime) in the same place: rebuild.
  for header in ("dnnl_version.h", "dnnl_config.h"):
    path = pathlib.Path(sys.prefix, "include", "oneapi", "dnnl", header)
    key.update(path.read_bytes() if path.exists() else b"")
  cache = os.environ.get("RIR_JAX_ONEDNN_CACHE", "~/.cache/rir_jax/onednn")
  return pathlib.Path(cache).expanduser() / f"rir_jax_cpu-{key.hexdigest()[:16]}.so"


def _digest_path(path: pathlib.Path) -> pathlib.Path:
  return path.with_name(path.name + ".sha256")


def _digest(path: pathlib.Path) -> str:
  """Size and SHA-256 of a file: what a whole library must still have when it is loaded."""
  return f"{path.stat().st_size} {hashlib.sha256(path.read_bytes()).hexdigest()}"


def _is_whole(path: pathlib.Path) -> bool:
  """Whether the cached library is the one its build recorded. Loading a cut or damaged
  library is no error but a crash (SIGBUS) when the missing part is touched."""
  try:
    return _digest_path(path).read_text().strip() == _digest(path)
  except OSError:
    return False


class BuildFailed(RuntimeError):
  """The library did not build where everything it needs is installed: the user must act."""


def _compiler_errors(stderr: str) -> str:
  """g++'s error lines, not its warnings (jaxlib's headers raise a page of those)."""
  lines = stderr.splitlines()
  errors = [line.strip() for line in lines if re.search(r"\b(error|failed)\b", line)]
  return "; ".join(errors[:5] or lines[-3:])


def _build(path: pathlib.Path) -> None:
  """Compiles the library to a temporary file, then renames it into place.

  The rename is atomic, so processes building at once never load a half-written
  file: the last one to finish replaces an identical library. Its size and hash are
  recorded first (atomically too), for `_is_whole` to check before every load.
  """
  if shutil.which("g++") is None:
    raise RuntimeError("g++ not found")
  header = pathlib.Path(sys.prefix, "include", "oneapi", "dnnl", "dnnl.hpp")
  if not header.exists():
    raise RuntimeError(f"{header} not found: pip install onednn onednn-devel")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(suffix=".so.tmp", dir=path.parent)
    os.close(fd)
  except OSError as e:
    raise BuildFailed(f"cannot write in {path.parent} ({e.strerror})") from e
  digest = f"{temporary}.sha256"
  try:
    result = subprocess.run(_compile_command(temporary), capture_output=True, text=True)
    if result.returncode:
      raise BuildFailed(f"g++ failed building {path}: {_compiler_errors(result.stderr)}")
    os.chmod(temporary, 0o755)  # mkstemp's 0600 would hide it from other users.
    pathlib.Path(digest).write_text(_digest(pathlib.Path(temporary)) + "\n")
    os.replace(digest, _digest_path(path))
    os.replace(temporary, path)
  except OSError as e:
    raise BuildFailed(f"cannot write {path} ({e.strerror})") from e
  finally:
    for leftover in (temporary, digest):
      if os.path.exists(leftover):
        os.unlink(leftover)


def _find_opencl_cpu_driver() -> None:
  """Lets a SYCL build of oneDNN (PyPI's `onednn`) find its CPU device.

  That build runs CPU work through SYCL, whose CPU device comes from the OpenCL
  driver `libintelocl.so`. pip installs the driver beside libdnnl but registers
  it nowhere the OpenCL loader looks; OCL_ICD_FILENAMES names it.
  """
  driver = os.path.join(sys.prefix, "lib", "libintelocl.so")
  named = os.environ.get("OCL_ICD_FILENAMES", "")
  if os.path.exists(driver) and driver not in named.split(":"):
    os.environ["OCL_ICD_FILENAMES"] = ":".join(filter(None, (driver, named)))


@functools.cache
def _load() -> tuple[bool, bool, str]:
  """Builds (once per cache directory), loads, checks and registers the library.

  Returns whether it is usable, whether its convolutions take bf16, and a message.
  """
  try:
    path = _library_path()
    if path.exists() and not _is_whole(path):
      log.warning("the cached kernel library %s is damaged or unverified: rebuilding it", path)
    if not _is_whole(path):
      _build(path)
      if not _is_whole(path):  # another process rebuilt it meanwhile, or the disk lies
        raise RuntimeError(f"{path} does not match its recorded size and hash")
    _find_opencl_cpu_driver()
    library = ctypes.CDLL(str(path))
    message = ctypes.create_string_buffer(512)
    if library.RirOnednnCheck(message, ctypes.c_size_t(len(message))):
      return False, False, f"{message.value.decode()} ({path})"
    for target in TARGETS:
      jax.ffi.register_ffi_target(
          target, jax.ffi.pycapsule(getattr(library, target)), platform="cpu")
  except Exception as e:  # pylint: disable=broad-except
    # Anything from a missing compiler to a missing libdnnl.so means "use XLA"; a failed
    # build, where all it needs is installed, is a fault to hear of.
    if isinstance(e, BuildFailed):
      log.warning("the kernel library did not build, so convolutions run on XLA's, slower: "
                  "%s", e)
    return False, False, f"{type(e).__name__}: {e}"
  bf16 = bool(library.RirOnednnSupportsBf16())
  return True, bf16, (f"{message.value.decode()}, bf16 convolutions: "
                      f"{'native' if bf16 else 'none on this CPU'} ({path})")


def is_available() -> tuple[bool, str]:
  """Whether the library builds and loads here, and why (or why not)."""
  with _load_lock:
    usable, _, message = _load()
  return usable, message


def bf16_convolutions() -> bool:
  """Whether oneDNN convolves bf16 on this CPU: its bf16 kernels need AVX-512 or AMX.
  False where the library does not load."""
  with _load_lock:
    return _load()[1]
