"""2-D convolution on oneDNN for JAX on CPU: forward and both gradients.

On ResNet-20's CIFAR shapes oneDNN beats XLA's CPU convolutions 1-3x in f32
(most on the weight gradient) and 2-7x in bf16 (AVX512_BF16). The three passes
are XLA FFI calls into `onednn_conv.cc`, built with g++ on first use against
the oneDNN pip put in this environment (`pip install onednn onednn-devel`) and
cached on disk. A `jax.custom_vjp` routes `jax.grad` through them; custom
partitioning keeps a batch-split convolution split (each device convolves its
slice; the weight gradients are summed).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

_SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
_CXXFLAGS = ("-O2", "-shared", "-fPIC", "-std=c++17")
_TARGETS = {"forward": "RirOnednnConvForward",
            "backward_data": "RirOnednnConvBackwardData",
            "backward_weights": "RirOnednnConvBackwardWeights"}
_NHWC = ("NHWC", "HWIO", "NHWC")
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
_load_lock = threading.Lock()


def _compile_command(output: str) -> list[str]:
  lib = os.path.join(sys.prefix, "lib")
  # DT_RPATH (not RUNPATH) also serves libdnnl's own dependencies in `lib`.
  return ["g++", *_CXXFLAGS, f"-I{jax.ffi.include_dir()}",
          f"-I{os.path.join(sys.prefix, 'include')}", str(_SOURCE), "-o", output,
          f"-L{lib}", "-ldnnl", f"-Wl,--disable-new-dtags,-rpath,{lib}"]


def _library_path() -> pathlib.Path:
  """Where the library for this source, jax, oneDNN and set of flags lives."""
  key = hashlib.sha256()
  key.update(_SOURCE.read_bytes())
  key.update(jax.__version__.encode())
  key.update(" ".join(_compile_command("")).encode())
  # Another oneDNN (version, or threading runtime) in the same place: rebuild.
  for header in ("dnnl_version.h", "dnnl_config.h"):
    path = pathlib.Path(sys.prefix, "include", "oneapi", "dnnl", header)
    key.update(path.read_bytes() if path.exists() else b"")
  cache = os.environ.get("RIR_JAX_ONEDNN_CACHE", "~/.cache/rir_jax/onednn")
  return pathlib.Path(cache).expanduser() / f"onednn_conv-{key.hexdigest()[:16]}.so"


def _build(path: pathlib.Path) -> None:
  """Compiles the library to a temporary file, then renames it into place.

  The rename is atomic, so processes building at once never load a half-written
  file: the last one to finish replaces an identical library.
  """
  if shutil.which("g++") is None:
    raise RuntimeError("g++ not found")
  header = pathlib.Path(sys.prefix, "include", "oneapi", "dnnl", "dnnl.hpp")
  if not header.exists():
    raise RuntimeError(f"{header} not found: pip install onednn onednn-devel")
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, temporary = tempfile.mkstemp(suffix=".so.tmp", dir=path.parent)
  os.close(fd)
  try:
    result = subprocess.run(_compile_command(temporary), capture_output=True, text=True)
    if result.returncode:
      raise RuntimeError(f"g++ failed building {_SOURCE.name}:\n{result.stderr[-3000:]}")
    os.chmod(temporary, 0o755)  # mkstemp's 0600 would hide it from other users.
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.unlink(temporary)


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
def _load() -> tuple[bool, str]:
  """Builds (once per cache directory), loads, checks and registers the library."""
  try:
    path = _library_path()
    if not path.exists():
      _build(path)
    _find_opencl_cpu_driver()
    library = ctypes.CDLL(str(path))
    message = ctypes.create_string_buffer(512)
    if library.RirOnednnCheck(message, ctypes.c_size_t(len(message))):
      return False, f"{message.value.decode()} ({path})"
    for target in _TARGETS.values():
      jax.ffi.register_ffi_target(
          target, jax.ffi.pycapsule(getattr(library, target)), platform="cpu")
  except Exception as e:  # pylint: disable=broad-except
    # Anything from a missing compiler to a missing libdnnl.so means "use XLA".
    return False, f"{type(e).__name__}: {e}"
  return True, f"{message.value.decode()} ({path})"


def is_available() -> tuple[bool, str]:
  """Whether the oneDNN library builds and loads here, and why (or why not)."""
  with _load_lock:
    return _load()


def _run(pass_: str, a: jax.Array, b: jax.Array, strides: tuple[int, int],
         pads: tuple[tuple[int, int], ...], spatial: tuple[int, int]) -> jax.Array:
  """One oneDNN pass as an FFI call.

  `spatial` is the (H, W) of the result, which the operands do not determine;
  its other dimensions follow from `a` and `b`.
  """
  shape = {"forward": (a.shape[0], *spatial, b.shape[3]),
           "backward_data": (a.shape[0], *spatial, b.shape[2]),
           "backward_weights": (*spatial, a.shape[3], b.shape[3])}[pass_]
  call = jax.ffi.ffi_call(_TARGETS[pass_], jax.ShapeDtypeStruct(shape, a.dtype),
                          vmap_method="sequential")
  return call(a, b, strides=np.asarray(strides, np.int64),
              pad_lo=np.asarray([lo for lo, _ in pads], np.int64),
              pad_hi=np.asarray([hi for _, hi in pads], np.int64))


def _shardings(pass_, mesh, arg_shapes):
  """The batch split as the first operand's is, everything else whole.

  An uneven split stays whole: the padding rows of its last slice hold
  garbage, which the weight gradient would sum in.
  """
  sharding = arg_shapes[0].sharding
  batch = sharding.spec[0] if isinstance(sharding, NamedSharding) and sharding.spec else None
  axes = (batch,) if isinstance(batch, str) else batch or ()
  if arg_shapes[0].shape[0] % np.prod([mesh.shape[a] for a in axes], dtype=int):
    batch = None
  split, whole = NamedSharding(mesh, PartitionSpec(batch)), NamedSharding(mesh, PartitionSpec())
  if pass_ == "backward_weights":
    return batch, (split, split), whole
  return batch, (split, whole), split


def _partition(pass_, strides, pads, spatial, mesh, arg_shapes, result_shape):
  """custom_partitioning: the per-device pass and the shardings it runs on."""
  del result_shape  # Follows from the operands' shardings.
  batch, arg_shardings, result_sharding = _shardings(pass_, mesh, arg_shapes)

  def lower(a, b):
    out = _run(pass_, a, b, strides, pads, spatial)
    if pass_ == "backward_weights" and batch is not None:
      out = lax.psum(out, batch)  # Each device saw only its slice of the batch.
    return out

  return mesh, lower, result_sharding, arg_shardings


def _infer_sharding(pass_, strides, pads, spatial, mesh, arg_shapes, result_shape):
  """GSPMD (Shardy off): the result's sharding, as `_partition` will make it."""
  del strides, pads, spatial, result_shape
  return _shardings(pass_, mesh, arg_shapes)[2]


def _sharding_rule(pass_, strides, pads, spatial, mesh, operand_types, result_types):
  """Shardy: only the batch factor `b` may stay split; the weight gradient sums over it."""
  del strides, pads, spatial, mesh, operand_types, result_types
  rule = {"forward": "b h w c, kh kw c o -> b oh ow o",
          "backward_data": "b oh ow o, kh kw c o -> b h w c",
          "backward_weights": "b h w c, b oh ow o -> kh kw c o"}[pass_]
  # Shardy wants the factors in order of first appearance.
  others = tuple(dict.fromkeys(f for f in rule.replace(",", " ").split() if f not in ("b", "->")))
  reduction = ("b",) if pass_ == "backward_weights" else ()
  return rule, {"need_replication_factors": others, "reduction_factors": reduction}


_run_sharded = custom_partitioning(_run, static_argnums=(0, 3, 4, 5))
_run_sharded.def_partition(_partition, infer_sharding_from_operands=_infer_sharding,
                           sharding_rule=_sharding_rule)


@functools.cache
def _pass(pass_, strides, pads, spatial):
  """`_run_sharded` as a function of the two operands, with a vmap rule.

  custom_partitioning has no batching rule of its own: under vmap, run the
  pass once per mapped element, as ffi_call's "sequential" would.
  """
  @jax.custom_batching.custom_vmap
  def run(a, b):
    return _run_sharded(pass_, a, b, strides, pads, spatial)

  @run.def_vmap
  def _rule(axis_size, in_batched, a, b):
    del axis_size
    mapped = tuple(x for x, batched in zip((a, b), in_batched) if batched)

    def one(slices):
      rest = iter(slices)
      return run(*(next(rest) if batched else x for x, batched in zip((a, b), in_batched)))

    return lax.map(one, mapped), True

  return run


def _output_hw(x_shape, w_shape, strides, pads) -> tuple[int, int]:
  """The output's (H, W) for an NHWC input and HWIO kernel."""
  return tuple((size + lo + hi - k) // s + 1 for size, k, s, (lo, hi)
               in zip(x_shape[1:3], w_shape[:2], strides, pads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, pads):
  return _conv_fwd(x, w, strides, pads)[0]


def _conv_fwd(x, w, strides, pads):
  out_hw = _output_hw(x.shape, w.shape, strides, pads)
  return _pass("forward", strides, pads, out_hw)(x, w), (x, w)


def _conv_bwd(strides, pads, residuals, dy):
  x, w = residuals
  dx = _pass("backward_data", strides, pads, x.shape[1:3])(dy, w)
  dw = _pass("backward_weights", strides, pads, w.shape[:2])(x, dy)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def _applies(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers,
             feature_group_count, batch_group_count, preferred_element_type) -> bool:
  """Whether the convolution is one oneDNN runs here, padding aside."""
  if lhs.ndim != 4 or rhs.ndim != 4 or len(window_strides) != 2:
    return False
  if lhs.dtype != rhs.dtype or lhs.dtype not in _DTYPES or (
      preferred_element_type is not None and jnp.dtype(preferred_element_type) != lhs.dtype):
    return False
  if feature_group_count != 1 or batch_group_count != 1:
    return False
  if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
    return False
  # Explicit sharding and shard_map type each result's sharding or variance;
  # the FFI calls' results carry neither.
  if any(m.explicit_axes or m.manual_axes for m in (
      jax.typeof(lhs).sharding.mesh, jax.typeof(rhs).sharding.mesh)):
    return False
  return dimension_numbers is not None and (
      lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))


def _explicit_pads(lhs_shape, rhs_shape, strides, padding):
  """The ((lo, hi), (lo, hi)) pads, or None where oneDNN cannot take them."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs_shape[1:3], rhs_shape[:2], strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  out_hw = _output_hw(lhs_shape, rhs_shape, strides, pads)
  # oneDNN takes no negative pads, and empty arrays need no kernel.
  if min(min(p) for p in pads) < 0 or min(*lhs_shape, *rhs_shape[2:], *out_hw) < 1:
    return None
  return pads


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         out_sharding=None):
  """`lax.conv_general_dilated` on oneDNN where it applies, else on XLA.

  oneDNN takes NHWC/HWIO/NHWC, f32 or bf16, any strides and non-negative
  explicit or 'SAME'/'VALID' padding; no dilation, feature groups or
  `out_sharding`, nor shard_map or explicit sharding (automatic is fine). It
  ignores `precision`: it computes f32 in full f32, as XLA's CPU backend does.
  Raises RuntimeError where the library does not load.
  """
  lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
  strides = tuple(int(s) for s in window_strides)
  pads = _explicit_pads(lhs.shape, rhs.shape, strides, padding) if out_sharding is None and (
      _applies(lhs, rhs, strides, lhs_dilation, rhs_dilation, dimension_numbers,
               feature_group_count, batch_group_count, preferred_element_type)) else None
  if pads is None:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type,
        out_sharding)
  available, reason = is_available()
  if not available:
    raise RuntimeError(f"oneDNN convolution unavailable: {reason}")
  return _conv(lhs, rhs, strides, pads)
