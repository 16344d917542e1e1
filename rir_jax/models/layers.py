"""Pieces every model shares: He-initialised convolutions, batch norm, shortcuts."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rir_jax.kernels import select
from rir_jax.kernels.batch_norm import BatchNorm

Dtype = Any
CONV_IMPLS = select.IMPLS

SHORTCUTS = ('projection', 'zero_pad')

# He et al. (2015) normal init, std = sqrt(2 / fan_out). Batch norm follows every conv,
# so the forward scale is normalised away anyway; fan_out instead keeps the variance of
# the backward signal, and it is torchvision's choice (kaiming_normal_(mode='fan_out')),
# so a PyTorch replica reproduces the init with one line.
he_normal = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def check_choice(what: str, value: Any, choices: Sequence[Any]) -> None:
  """Raises a one-line ValueError unless `value` is one of `choices`."""
  if value not in choices:
    raise ValueError(f"unknown {what} {value!r}; choose one of: "
                     f"{', '.join(map(str, choices))}")


def conv(features: int, kernel_size: int = 3, strides: int = 1, *,
         dtype: Dtype, conv_impl: str, name: str | None = None) -> nn.Conv:
  """A bias-free square convolution (batch norm supplies the bias).

  Padding is k // 2 on every side, as in PyTorch: XLA's 'SAME' pads a stride-2 conv
  on an even input only at the bottom/right, which shifts the sampling grid.
  `conv_impl` picks the kernels that run it (see rir_jax.kernels.select), not what it computes.
  """
  return nn.Conv(features, (kernel_size, kernel_size), strides=strides,
                 padding=kernel_size // 2, use_bias=False, kernel_init=he_normal,
                 dtype=dtype, conv_general_dilated=select.conv_general_dilated_for(conv_impl),
                 name=name)


def conv2d(x: jax.Array, kernel: jax.Array, strides: int, dtype: Dtype,
           conv_impl: str) -> jax.Array:
  """Applies a raw 3x3 HWIO kernel the way `conv` does (padding 1, no bias)."""
  return select.conv_general_dilated_for(conv_impl)(
      x.astype(dtype), kernel.astype(dtype), (strides, strides), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def batch_norm(train: bool, *, momentum: float, epsilon: float, dtype: Dtype,
               conv_impl: str, relu: bool = False, kernel_sums: bool = True,
               name: str | None = None) -> BatchNorm:
  """Batch norm on batch statistics in training, running averages in evaluation;
  then ReLU if `relu`, in the same passes over memory (rir_jax.kernels.batch_norm).
  Where `conv_impl` runs on the CPU kernel library, so do its sums, if `kernel_sums`
  (see BatchNorm)."""
  return BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                   dtype=dtype, relu=relu, impl=conv_impl, kernel_sums=kernel_sums,
                   name=name)


def zero_pad(x: jax.Array, features: int, strides: int) -> jax.Array:
  """He et al.'s option A: subsample spatially, append zero channels at the end."""
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


def is_identity(x: jax.Array, features: int, strides: int) -> bool:
  """Whether a shortcut from `x` to `features` channels at `strides` keeps shape."""
  return x.shape[-1] == features and strides == 1


def shortcut(x: jax.Array, features: int, strides: int, kind: str, *, dtype: Dtype,
             conv_impl: str, projection_input: jax.Array | None = None) -> jax.Array:
  """Identity where the shape is kept, else zero padding or a 1x1 projection.

  Must be called inside a compact method: the projection conv, named 'projection',
  becomes a child of the calling module. `projection_input` lets a pre-activation
  block project its pre-activated input while zero padding reads the raw one.
  """
  if is_identity(x, features, strides):
    return x
  if kind == 'zero_pad':
    return zero_pad(x, features, strides)
  source = x if projection_input is None else projection_input
  return conv(features, 1, strides, dtype=dtype, conv_impl=conv_impl,
              name='projection')(source)


def classifier_logits(x: jax.Array, num_classes: int, dtype: Dtype) -> jax.Array:
  """Global average pool, then a dense layer; logits in float32 for the loss."""
  x = jnp.mean(x, axis=(1, 2))
  return nn.Dense(num_classes, dtype=dtype, name='head')(x).astype(jnp.float32)
