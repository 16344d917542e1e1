"""2-D convolution on oneDNN for JAX on CPU: forward and both gradients.

On the CIFAR models' shapes oneDNN is faster than XLA's CPU convolutions, most on the
weight gradient and in bf16 (benchmarks/PERFORMANCE.md, section 1). The three passes
are XLA FFI calls into `csrc/onednn_conv.cc`, part of the project's CPU kernel
library (rir_jax.kernels.build: built with g++ on first use against the oneDNN
pip put in this environment, and cached on disk). A `jax.custom_vjp` routes
`jax.grad` through them; custom partitioning keeps a batch-split convolution
split (each device convolves its slice; the weight gradients are summed).
"""
from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from rir_jax.kernels import build, sharding

_TARGETS = {"forward": "RirOnednnConvForward",
            "backward_data": "RirOnednnConvBackwardData",
            "backward_weights": "RirOnednnConvBackwardWeights"}
_NHWC = ("NHWC", "HWIO", "NHWC")
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
log = logging.getLogger(__name__)


def is_available() -> tuple[bool, str]:
  """Whether the kernel library (rir_jax.kernels.build) builds and loads here, and why."""
  return build.is_available()


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
  """The batch split as the first operand's is (evenly), everything else whole."""
  batch = sharding.batch_axes(mesh, arg_shapes[0])
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
      # Each device saw only its slice of the batch.
      out = sharding.sum_across(out, batch)
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
  return sharding.sharding_rule(rule, sums_over_batch=pass_ == "backward_weights")


_run_sharded = custom_partitioning(_run, static_argnums=(0, 3, 4, 5))
_run_sharded.def_partition(_partition, infer_sharding_from_operands=_infer_sharding,
                           sharding_rule=_sharding_rule)


@functools.cache
def _pass(pass_, strides, pads, spatial):
  """`_run_sharded` as a function of the two operands, with a vmap rule."""
  return sharding.sequential_vmap(
      lambda a, b: _run_sharded(pass_, a, b, strides, pads, spatial),
      f"rir_conv_{pass_}_strides{strides}_pads{pads}_spatial{spatial}")


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
  if not sharding.automatic_sharding(lhs, rhs):
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

  oneDNN takes NHWC/HWIO/NHWC, f32 or bf16 (in f32 where the CPU has no bf16
  kernels), any strides and non-negative
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
  if rhs.shape[:2] == (1, 1) and strides != (1, 1):
    lhs, strides, pads = _pixels_read(lhs, strides, pads), (1, 1), ((0, 0), (0, 0))
  if lhs.dtype == jnp.bfloat16 and not build.bf16_convolutions():
    return _widened_conv(lhs, rhs, strides, pads)
  return _conv(lhs, rhs, strides, pads)


def _pixels_read(lhs, strides, pads):
  """The input pixels a strided 1x1 convolution reads, padding included: convolved with
  unit strides, they give its result. oneDNN's own way to do this, on AVX2 CPUs (3.2's
  `jit_1x1:avx2`), returned wrong weight gradients for input channels not a multiple of 8
  (tests/test_onednn_conv.py)."""
  padded = lax.pad(lhs, jnp.zeros((), lhs.dtype), ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads),
                                                    (0, 0, 0)))
  out_hw = _output_hw(lhs.shape, (1, 1), strides, pads)
  end = (padded.shape[0], *((o - 1) * s + 1 for o, s in zip(out_hw, strides)), padded.shape[3])
  return lax.slice(padded, (0, 0, 0, 0), end, (1, *strides, 1))


@functools.cache  # one warning per process
def _warn_widened() -> None:
  log.warning("this CPU has no bf16 convolutions in oneDNN (they need AVX-512 or AMX): "
              "bf16 convolutions run in float32 and round to bf16, no faster than "
              "dtype=float32")


def _widened_conv(lhs, rhs, strides, pads):
  """A bf16 convolution as oneDNN's bf16 kernels compute it (f32 sums of exact products,
  rounded to bf16), on its f32 kernels; its gradients come back in bf16 likewise."""
  _warn_widened()
  f32 = jnp.float32
  return _conv(lhs.astype(f32), rhs.astype(f32), strides, pads).astype(lhs.dtype)
