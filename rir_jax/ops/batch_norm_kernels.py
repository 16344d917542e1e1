"""Batch norm's per-channel sums on the project's CPU kernels.

`rir_jax.models.batch_norm` takes two pairs of sums over the activations: in the
forward pass of x and x^2, in the backward pass of g and g * x (g the incoming
gradient under the ReLU's mask). XLA's CPU reductions take in no type conversion
or select, so it spends a pass writing the masked g, and in bf16 a pass converting x
to f32, before each pair. These are the two pairs as FFI calls into
`batch_norm_kernels.cc` (rir_jax.ops.library): one read of the activations, in their
own dtype (benchmarks/PERFORMANCE.md, section 7).

Activations are channels-last (rank >= 2), f32 or bf16; sums come back as f32 [2, C].
The forward pair may weight each example (f32 [N]; 0 leaves a padding row out).
A batch-split input stays split: each device sums its slice, then the devices' sums
are gathered and added in a fixed order.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from rir_jax.ops import library, partitioning

DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
LANES = 16  # channels per vector in batch_norm_kernels.cc (kLanes)
# How many leading operands of each kernel are split along the batch (activations, and
# weights per example); the rest, coefficients per channel, are whole.
_BATCHED = {"RirBatchNormStats": 1, "RirBatchNormWeightedStats": 2, "RirBatchNormGradSums": 2}


def applies(*activations: jax.Array) -> bool:
  """Whether the kernels run on these activations here, and fast: the library loads,
  they are f32 or bf16 of rank >= 2 whose channels fill whole vectors of LANES, and
  their sharding is automatic (not explicit, not shard_map).

  The kernels take any channel count, but channels past the last whole vector go one
  at a time, slower than XLA's reductions (RiR's 8-channel stems: section 7).
  """
  return (all(a.dtype in DTYPES and a.ndim >= 2 and a.shape[-1] % LANES == 0
              for a in activations)
          and partitioning.automatic_sharding(*activations) and library.is_available()[0])


def _call(target, relu, *operands):
  """One FFI call: the two sums, f32 [2, C]."""
  result = jax.ShapeDtypeStruct((2, operands[0].shape[-1]), jnp.float32)
  attributes = {} if relu is None else {"relu": relu}
  return jax.ffi.ffi_call(target, result)(*operands, **attributes)


def _shardings(target, mesh, arg_shapes):
  """Activations and weights split along the batch as the first operand is,
  coefficients and the sums whole."""
  batch = partitioning.batch_axes(mesh, arg_shapes[0])
  split, whole = NamedSharding(mesh, PartitionSpec(batch)), NamedSharding(mesh, PartitionSpec())
  args = tuple(split if i < _BATCHED[target] else whole for i in range(len(arg_shapes)))
  return batch, args, whole


def _partition(target, relu, mesh, arg_shapes, result_shape):
  del result_shape  # Whole, whatever the operands.
  batch, arg_shardings, result_sharding = _shardings(target, mesh, arg_shapes)

  def lower(*operands):
    sums = _call(target, relu, *operands)
    # Each device summed only its slice of the batch.
    return sums if batch is None else partitioning.sum_across(sums, batch)

  return mesh, lower, result_sharding, arg_shardings


def _infer_sharding(target, relu, mesh, arg_shapes, result_shape):
  """GSPMD (Shardy off): the sums are whole."""
  del relu, result_shape
  return _shardings(target, mesh, arg_shapes)[2]


def _sharding_rule(target, relu, mesh, operand_types, result_types):
  """Shardy: only the batch factor `b` may stay split, and the sums reduce over it."""
  del relu, mesh, result_types
  rank = len(operand_types[0].shape)
  x = " ".join(["b", *(f"d{i}" for i in range(rank - 2)), "c"])
  batched = lambda t: "b" if len(t.shape) == 1 else x  # weights per example, or activations
  operands = [batched(t) if i < _BATCHED[target] else "k c"
              for i, t in enumerate(operand_types)]
  return partitioning.sharding_rule(f"{', '.join(operands)} -> s c", sums_over_batch=True)


_call_sharded = custom_partitioning(_call, static_argnums=(0, 1))
_call_sharded.def_partition(_partition, infer_sharding_from_operands=_infer_sharding,
                            sharding_rule=_sharding_rule)


@functools.cache
def _kernel(target, relu):
  """`_call_sharded` as a function of the operands, with a vmap rule."""
  available, reason = library.is_available()  # loads and registers the kernels
  if not available:
    raise RuntimeError(f"batch norm kernels unavailable: {reason}")
  return partitioning.sequential_vmap(
      lambda *operands: _call_sharded(target, relu, *operands))


def stats(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """[sum of x, sum of x^2] over every axis but the last: f32 [2, C]. With `weights`
  (f32, one per example along x's leading axis), each row counts times its weight."""
  if weights is None:
    return _kernel("RirBatchNormStats", None)(x)
  return _kernel("RirBatchNormWeightedStats", None)(x, weights.astype(jnp.float32))


def grad_sums(x: jax.Array, dy: jax.Array, a: jax.Array, b: jax.Array,
              relu: bool) -> jax.Array:
  """[sum of g, sum of g * x] (f32 [2, C]); g is dy where x * a + b > 0 (a and b per
  channel) if `relu`, all of dy otherwise. dy has x's shape, any float dtype the
  kernels take."""
  coefficients = jnp.stack([a, b]).astype(jnp.float32)
  return _kernel("RirBatchNormGradSums", bool(relu))(x, dy, coefficients)
