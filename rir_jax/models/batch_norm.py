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

_F32 = jnp.float32


def _reduced_axes(x: jax.Array) -> tuple[int, ...]:
  return tuple(range(x.ndim - 1))  # every axis but the channels


def _count(x: jax.Array) -> int:
  return x.size // x.shape[-1]


def _apply(x: jax.Array, a: jax.Array, b: jax.Array, relu: bool, dtype: Any) -> jax.Array:
  y = x.astype(_F32) * a + b
  return (jnp.maximum(y, 0) if relu else y).astype(dtype)


def _normalize_forward(x, scale, bias, epsilon, relu, dtype):
  xf = x.astype(_F32)
  axes, n = _reduced_axes(x), _count(x)
  mean = jnp.sum(xf, axes) / n
  # E[x^2] - E[x]^2, flax's default (use_fast_variance): both sums read x alone.
  var = jnp.maximum(jnp.sum(xf * xf, axes) / n - mean * mean, 0.0)
  inv_std = jax.lax.rsqrt(var + epsilon)
  a = scale * inv_std
  b = bias - mean * a
  return (_apply(x, a, b, relu, dtype), mean, var), (x, scale, mean, inv_std, a, b)


def _normalize_backward(epsilon, relu, dtype, residuals, cotangents):
  del epsilon, dtype
  x, scale, mean, inv_std, a, b = residuals
  dy = cotangents[0]  # the statistics' cotangents are zero: see batch_norm_train
  axes, n = _reduced_axes(x), _count(x)
  xf = x.astype(_F32)
  grad = dy.astype(_F32)
  if relu:  # the forward pass's mask, recomputed as it was computed
    grad = jnp.where(xf * a + b > 0, grad, 0.0)
  grad_bias = jnp.sum(grad, axes)
  # sum of grad * x_hat, from sum(grad * x): no pass writes x - mean. Its cancellation is
  # that of the forward pass's E[x^2] - E[x]^2, flax's default too.
  grad_scale = inv_std * (jnp.sum(grad * xf, axes) - mean * grad_bias)
  # dx = a * (grad - mean(grad) - x_hat * mean(grad * x_hat)), written per channel as
  # grad * a + x * slope + offset so that it is one elementwise pass.
  slope = -scale * inv_std * inv_std * grad_scale / n
  offset = -a * grad_bias / n - mean * slope
  dx = (grad * a + xf * slope + offset).astype(x.dtype)
  return dx, grad_scale, grad_bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _normalize(x, scale, bias, epsilon, relu, dtype):
  return _normalize_forward(x, scale, bias, epsilon, relu, dtype)[0]


_normalize.defvjp(_normalize_forward, _normalize_backward)


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, *,
                     epsilon: float, relu: bool = False, dtype: Any = None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode batch norm over every axis but the last, then ReLU if `relu`.

  Returns (y in `dtype`, else x's; batch mean; biased batch variance), the statistics
  float32 and outside the gradient: they feed the running averages, not the loss, and the
  hand-written backward pass counts on that.
  """
  y, mean, var = _normalize(x, scale.astype(_F32), bias.astype(_F32), epsilon, relu,
                            jnp.dtype(dtype or x.dtype))
  return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


class BatchNorm(nn.Module):
  """Batch norm (then ReLU if `relu`) over the last axis, flax's variables and names.

  Training (`use_running_average=False`) normalises with the batch's statistics and,
  except while initialising, moves the running averages towards them:
  average = momentum * average + (1 - momentum) * batch value. Evaluation uses the
  running averages. The output has `dtype` (x's dtype if None).
  """
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  relu: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = (x.shape[-1],)
    scale = self.param('scale', nn.initializers.ones, channels, _F32)
    bias = self.param('bias', nn.initializers.zeros, channels, _F32)
    average_mean = self.variable('batch_stats', 'mean', jnp.zeros, channels, _F32)
    average_var = self.variable('batch_stats', 'var', jnp.ones, channels, _F32)
    dtype = self.dtype or x.dtype
    if self.use_running_average:
      a = scale * jax.lax.rsqrt(average_var.value + self.epsilon)
      return _apply(x, a, bias - average_mean.value * a, self.relu, dtype)
    y, mean, var = batch_norm_train(x, scale, bias, epsilon=self.epsilon, relu=self.relu,
                                    dtype=dtype)
    if not self.is_initializing():
      average_mean.value = self.momentum * average_mean.value + (1 - self.momentum) * mean
      average_var.value = self.momentum * average_var.value + (1 - self.momentum) * var
    return y
