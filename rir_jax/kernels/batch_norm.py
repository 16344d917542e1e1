"""Batch norm with an optional ReLU, differentiated by hand in few passes over memory.

`flax.linen.BatchNorm` followed by `nn.relu` computes the same function, but JAX's
autodiff of it leaves XLA about a dozen passes over each activation per step: two sums
in the forward pass, a subtraction, the scale and shift, the ReLU's mask, and three sums
plus several elementwise products in the backward pass, and in bfloat16 conversions to
and from float32 between them. Here the forward pass takes the two sums of x and x^2,
then y = relu(x * a + b) with per-channel a and b; the backward pass takes the two sums
of g and g * x (g the incoming gradient under the ReLU's mask, recomputed from x
instead of stored), then dx = g * a + x * slope + offset, no pass writing x - mean.
Statistics and arithmetic stay float32 whatever the activations' dtype.
benchmarks/PERFORMANCE.md (section 6) measures what this saves, and what XLA still
runs as separate passes.

XLA's CPU reductions take in no type conversion or select, so it spends a pass writing
the masked g, and in bf16 a pass converting x to f32, before each pair of sums. On a
CPU with the project's kernel library the two pairs can run instead as FFI calls into
`csrc/batch_norm_kernels.cc` (`stats`, `grad_sums`): one read of the activations, in
their own dtype (section 7). They take channels-last activations (rank >= 2), f32 or
bf16, and return f32 [2, C]; the forward pair may weight each example (f32 [N]; 0 leaves
a padding row out). A batch-split input stays split: each device sums its slice, then
the devices' sums are gathered and added in a fixed order.

A per-example `mask` (flax's BatchNorm takes one too) leaves out padding rows: the
statistics are those of the masked-in examples alone, and so are their gradients.

`BatchNorm` keeps flax's variable names and semantics (params 'scale' and 'bias',
batch_stats 'mean' and 'var', the biased batch variance in the running average), so
checkpoints and parameter trees are those of `flax.linen.BatchNorm`.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from rir_jax.kernels import build, sharding

_F32 = jnp.float32
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
          and sharding.automatic_sharding(*activations) and build.is_available()[0])


def _call(target, relu, *operands):
  """One FFI call: the two sums, f32 [2, C]."""
  result = jax.ShapeDtypeStruct((2, operands[0].shape[-1]), jnp.float32)
  attributes = {} if relu is None else {"relu": relu}
  return jax.ffi.ffi_call(target, result)(*operands, **attributes)


def _shardings(target, mesh, arg_shapes):
  """Activations and weights split along the batch as the first operand is,
  coefficients and the sums whole."""
  batch = sharding.batch_axes(mesh, arg_shapes[0])
  split, whole = NamedSharding(mesh, PartitionSpec(batch)), NamedSharding(mesh, PartitionSpec())
  args = tuple(split if i < _BATCHED[target] else whole for i in range(len(arg_shapes)))
  return batch, args, whole


def _partition(target, relu, mesh, arg_shapes, result_shape):
  del result_shape  # Whole, whatever the operands.
  batch, arg_shardings, result_sharding = _shardings(target, mesh, arg_shapes)

  def lower(*operands):
    sums = _call(target, relu, *operands)
    # Each device summed only its slice of the batch.
    return sums if batch is None else sharding.sum_across(sums, batch)

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
  return sharding.sharding_rule(f"{', '.join(operands)} -> s c", sums_over_batch=True)


_call_sharded = custom_partitioning(_call, static_argnums=(0, 1))
_call_sharded.def_partition(_partition, infer_sharding_from_operands=_infer_sharding,
                            sharding_rule=_sharding_rule)


@functools.cache
def _kernel(target, relu):
  """`_call_sharded` as a function of the operands, with a vmap rule."""
  available, reason = build.is_available()  # loads and registers the kernels
  if not available:
    raise RuntimeError(f"batch norm kernels unavailable: {reason}")
  return sharding.sequential_vmap(
      lambda *operands: _call_sharded(target, relu, *operands), f"{target}_relu{relu}")


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



def _reduced_axes(x: jax.Array) -> tuple[int, ...]:
  return tuple(range(x.ndim - 1))  # every axis but the channels


def _count(x: jax.Array, weights: jax.Array | None) -> int | jax.Array:
  """Values summed per channel: every row, or the weighted examples' rows."""
  if weights is None:
    return x.size // x.shape[-1]
  return jnp.sum(weights) * (x.size // (x.shape[0] * x.shape[-1]))


def _per_example(weights: jax.Array, x: jax.Array) -> jax.Array:
  """The weights shaped to broadcast over x's rows: one per example, the leading axis."""
  return weights.reshape(-1, *(1,) * (x.ndim - 1))


def _apply(x: jax.Array, a: jax.Array, b: jax.Array, relu: bool, dtype: Any) -> jax.Array:
  y = x.astype(_F32) * a + b
  return (jnp.maximum(y, 0) if relu else y).astype(dtype)


def _sums(x: jax.Array, weights: jax.Array | None,
          kernels: bool) -> tuple[jax.Array, jax.Array]:
  """Per channel: sum of x and of x^2 (each row times its example's weight), in f32."""
  if kernels:
    sums = stats(x, weights)
    return sums[0], sums[1]
  xf = x.astype(_F32)
  weighted = xf if weights is None else xf * _per_example(weights, x)
  return jnp.sum(weighted, _reduced_axes(x)), jnp.sum(weighted * xf, _reduced_axes(x))


def _masked(x, dy, a, b, relu):
  """dy where the forward pass's ReLU let x through (recomputed as it was computed)."""
  grad = dy.astype(_F32)
  return jnp.where(x.astype(_F32) * a + b > 0, grad, 0.0) if relu else grad


def _grad_sums(x, dy, a, b, relu, kernels):
  """Per channel: sum of g and of g * x, g the masked gradient, in f32."""
  if kernels:
    sums = grad_sums(x, dy, a, b, relu)
    return sums[0], sums[1]
  grad = _masked(x, dy, a, b, relu)
  return jnp.sum(grad, _reduced_axes(x)), jnp.sum(grad * x.astype(_F32), _reduced_axes(x))


def _normalize_forward(x, scale, bias, weights, epsilon, relu, dtype, kernels):
  n = _count(x, weights)
  sum_x, sum_xx = _sums(x, weights, kernels)
  mean = sum_x / n
  # E[x^2] - E[x]^2, flax's default (use_fast_variance): both sums read x alone.
  var = jnp.maximum(sum_xx / n - mean * mean, 0.0)
  inv_std = jax.lax.rsqrt(var + epsilon)
  a = scale * inv_std
  b = bias - mean * a
  return (_apply(x, a, b, relu, dtype), mean, var), (x, weights, scale, mean, inv_std, a, b)


def _normalize_backward(epsilon, relu, dtype, kernels, residuals, cotangents):
  del epsilon, dtype
  x, weights, scale, mean, inv_std, a, b = residuals
  dy = cotangents[0]  # the statistics' cotangents are zero: see batch_norm_train
  n = _count(x, weights)
  # Over every row, masked-out ones too: the scale and bias act on all of them (their
  # gradient there is zero in training, where the loss leaves padding out).
  grad_bias, sum_grad_x = _grad_sums(x, dy, a, b, relu, kernels)
  # sum of grad * x_hat, from sum(grad * x): no pass writes x - mean. Its cancellation is
  # that of the forward pass's E[x^2] - E[x]^2, flax's default too.
  grad_scale = inv_std * (sum_grad_x - mean * grad_bias)
  # dx = a * (grad - mean(grad) - x_hat * mean(grad * x_hat)), written per channel as
  # grad * a + x * slope + offset so that it is one elementwise pass. The last two
  # terms are the path through the statistics, which only weighted rows feed.
  slope = -scale * inv_std * inv_std * grad_scale / n
  offset = -a * grad_bias / n - mean * slope
  direct, xf = _masked(x, dy, a, b, relu) * a, x.astype(_F32)
  if weights is None:
    dx = direct + xf * slope + offset
  else:
    dx = direct + (xf * slope + offset) * _per_example(weights, x)
  return dx.astype(x.dtype), grad_scale, grad_bias, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _normalize(x, scale, bias, weights, epsilon, relu, dtype, kernels):
  return _normalize_forward(x, scale, bias, weights, epsilon, relu, dtype, kernels)[0]


_normalize.defvjp(_normalize_forward, _normalize_backward)


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, *,
                     epsilon: float, relu: bool = False, dtype: Any = None,
                     kernels: bool = False,
                     mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode batch norm over every axis but the last, then ReLU if `relu`.

  Returns (y in `dtype`, else x's; batch mean; biased batch variance), the statistics
  float32 and outside the gradient: they feed the running averages, not the loss, and the
  hand-written backward pass counts on that. `kernels` takes the sums on the CPU
  kernels (`stats`, `grad_sums`; where `applies`).
  `mask` (one bool per example, the leading axis) keeps only the True examples in
  the statistics; every row is still normalised.
  """
  if kernels:
    # The kernels read x as written, in its dtype. Unfenced, XLA keeps a float32 copy of
    # a bfloat16 x's producer (a residual sum) for the elementwise passes, its excess
    # precision: x written in both dtypes, a pass and twice the bytes more per batch norm
    # (benchmarks/PERFORMANCE.md, section 14). Fenced, sums and passes read one rounded x.
    x = jax.lax.optimization_barrier(x)
  weights = None if mask is None else mask.astype(_F32)
  y, mean, var = _normalize(x, scale.astype(_F32), bias.astype(_F32), weights, epsilon, relu,
                            jnp.dtype(dtype or x.dtype), kernels)
  return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


class BatchNorm(nn.Module):
  """Batch norm (then ReLU if `relu`) over the last axis, flax's variables and names.

  Training (`use_running_average=False`) normalises with the batch's statistics and,
  except while initialising, moves the running averages towards them:
  average = momentum * average + (1 - momentum) * batch value. Evaluation uses the
  running averages. The output has `dtype` (x's dtype if None). A `mask` (one bool
  per example) leaves the False examples out of the batch statistics. With
  `kernel_sums`, the sums run on the CPU library's kernels (`stats`, `grad_sums`)
  where they apply; the function computed is the same. A model's `norm` on that
  back end (rir_jax.kernels.select).
  """
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  relu: bool = False
  kernel_sums: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    channels = (x.shape[-1],)
    scale = self.param('scale', nn.initializers.ones, channels, _F32)
    bias = self.param('bias', nn.initializers.zeros, channels, _F32)
    average_mean = self.variable('batch_stats', 'mean', jnp.zeros, channels, _F32)
    average_var = self.variable('batch_stats', 'var', jnp.ones, channels, _F32)
    dtype = self.dtype or x.dtype
    if self.use_running_average:
      a = scale * jax.lax.rsqrt(average_var.value + self.epsilon)
      return _apply(x, a, bias - average_mean.value * a, self.relu, dtype)
    kernels = self.kernel_sums and applies(x) and jnp.dtype(dtype) in DTYPES  # dy's dtype
    y, mean, var = batch_norm_train(x, scale, bias, epsilon=self.epsilon, relu=self.relu,
                                    dtype=dtype, kernels=kernels, mask=mask)
    if not self.is_initializing():
      average_mean.value = self.momentum * average_mean.value + (1 - self.momentum) * mean
      average_var.value = self.momentum * average_var.value + (1 - self.momentum) * var
    return y
