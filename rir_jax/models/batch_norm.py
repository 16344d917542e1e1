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
runs as separate passes; on a CPU with the project's kernel library, the two pairs of
sums run on kernels of their own instead, which read x (and g) once in their own dtype
(rir_jax.ops.batch_norm_kernels, section 7).

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

from rir_jax import ops
from rir_jax.ops import batch_norm_kernels

_F32 = jnp.float32


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
    sums = batch_norm_kernels.stats(x, weights)
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
    sums = batch_norm_kernels.grad_sums(x, dy, a, b, relu)
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
  kernels of rir_jax.ops.batch_norm_kernels (where `batch_norm_kernels.applies`).
  `mask` (one bool per example, the leading axis) keeps only the True examples in
  the statistics; every row is still normalised.
  """
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
  per example) leaves the False examples out of the batch statistics. `impl` is the
  models' `conv_impl`: where it runs on oneDNN ('onednn', or 'auto' on a CPU with the
  library), the sums run on the same library's batch-norm kernels
  (rir_jax.ops.batch_norm_kernels) unless `kernel_sums` is False; the function
  computed is the same. Turn them off where x is a sum of terms that nothing else
  needs summed (RiR's streams): XLA adds the terms inside its own reductions, a
  kernel needs the sum written out first, and that costs more than it saves
  (benchmarks/PERFORMANCE.md, section 7).
  """
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  relu: bool = False
  impl: str = 'xla'
  kernel_sums: bool = True

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
    kernels = (self.kernel_sums and ops.resolve(self.impl) == 'onednn'
               and batch_norm_kernels.applies(x)
               and jnp.dtype(dtype) in batch_norm_kernels.DTYPES)  # dy's dtype
    y, mean, var = batch_norm_train(x, scale, bias, epsilon=self.epsilon, relu=self.relu,
                                    dtype=dtype, kernels=kernels, mask=mask)
    if not self.is_initializing():
      average_mean.value = self.momentum * average_mean.value + (1 - self.momentum) * mean
      average_var.value = self.momentum * average_var.value + (1 - self.momentum) * var
    return y
