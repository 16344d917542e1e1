"""Pieces every model shares: convolutions, batch norm, shortcuts, the classifier head.

A model is given the modules it builds its convolutions and batch norms from, as flax's
examples do (`conv: ModuleDef`, `norm: ModuleDef`): the defaults below are plain flax,
and whoever builds the model may pass others that compute the same function on other
kernels. A `conv` takes `flax.linen.Conv`'s arguments. A `norm` takes the arguments of
`BatchNorm` below and is called as `norm(...)(x, mask=mask)`; it has flax's variables
(params 'scale' and 'bias', batch_stats 'mean' and 'var', the biased batch variance in
the running average) and leaves the examples where `mask` (one bool per example) is
False out of the batch statistics.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
ModuleDef = Any  # a flax module class, or a functools.partial of one

SHORTCUTS = ('projection', 'zero_pad')

# He et al. (2015) normal init, std = sqrt(2 / fan_out). Batch norm follows every conv,
# so the forward scale is normalised away anyway; fan_out instead keeps the variance of
# the backward signal, and it is torchvision's choice (kaiming_normal_(mode='fan_out')),
# so a PyTorch replica reproduces the init with one line.
he_normal = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class BatchNorm(nn.BatchNorm):
  """`flax.linen.BatchNorm`, then ReLU if `relu`; `mask` holds one bool per example.

  The models' default `norm`. The class name matters: flax names an unnamed module after
  its class (BatchNorm_0), so every `norm` class is called BatchNorm and one variable
  tree fits them all. The momentum is the models' default `bn_momentum` (PyTorch's 0.1).
  """
  momentum: float = 0.9
  relu: bool = False

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    # flax's mask is per value: one per example, broadcast over the rest.
    per_value = None if mask is None else mask.reshape(-1, *(1,) * (x.ndim - 1))
    y = super().__call__(x, mask=per_value)
    return nn.relu(y) if self.relu else y


def check_choice(what: str, value: Any, choices: Sequence[Any]) -> None:
  """Raises a one-line ValueError unless `value` is one of `choices`."""
  if value not in choices:
    raise ValueError(f"unknown {what} {value!r}; choose one of: "
                     f"{', '.join(map(str, choices))}")


def bound_norm(model: nn.Module, norm: ModuleDef) -> ModuleDef:
  """`norm` with a model's `dtype`, `bn_momentum` and `bn_epsilon` bound."""
  return functools.partial(norm, momentum=model.bn_momentum, epsilon=model.bn_epsilon,
                           dtype=model.dtype)


def bound(model: nn.Module) -> tuple[ModuleDef, ModuleDef]:
  """A model's `conv` and `norm`, its `dtype` (and batch-norm settings) bound."""
  return functools.partial(model.conv, dtype=model.dtype), bound_norm(model, model.norm)


def conv(module: ModuleDef, features: int, kernel_size: int = 3, strides: int = 1, *,
         name: str | None = None) -> nn.Module:
  """A bias-free square convolution of `module` (batch norm supplies the bias).

  Padding is k // 2 on every side, as in PyTorch: XLA's 'SAME' pads a stride-2 conv
  on an even input only at the bottom/right, which shifts the sampling grid.
  """
  return module(features, (kernel_size, kernel_size), strides=strides,
                padding=kernel_size // 2, use_bias=False, kernel_init=he_normal, name=name)


def conv_with(module: ModuleDef, x: jax.Array, kernel: jax.Array, strides: int) -> jax.Array:
  """Applies a square HWIO kernel the caller owns the way `conv` applies its own.

  RiR's kernels are parameters of its block, named for the streams they join, not of a
  Conv child: `module` runs unbound, on `kernel` as its variables.
  """
  size = kernel.shape[0]
  unbound = module(kernel.shape[-1], (size, size), strides=strides, padding=size // 2,
                   use_bias=False, parent=None)
  return unbound.apply({'params': {'kernel': kernel}}, x)


def zero_pad(x: jax.Array, features: int, strides: int) -> jax.Array:
  """He et al.'s option A: subsample spatially, append zero channels at the end."""
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


def is_identity(x: jax.Array, features: int, strides: int) -> bool:
  """Whether a shortcut from `x` to `features` channels at `strides` keeps shape."""
  return x.shape[-1] == features and strides == 1


def shortcut(module: ModuleDef, x: jax.Array, features: int, strides: int, kind: str, *,
             projection_input: jax.Array | None = None) -> jax.Array:
  """Identity where the shape is kept, else zero padding or a 1x1 projection.

  Must be called inside a compact method: the projection conv (of `module`), named
  'projection', becomes a child of the calling module. `projection_input` lets a
  pre-activation block project its pre-activated input while zero padding reads the raw one.
  """
  if is_identity(x, features, strides):
    return x
  if kind == 'zero_pad':
    return zero_pad(x, features, strides)
  source = x if projection_input is None else projection_input
  return conv(module, features, 1, strides, name='projection')(source)


def classifier_logits(x: jax.Array, num_classes: int, dtype: Dtype) -> jax.Array:
  """Global average pool, then a dense layer; logits in float32 for the loss."""
  x = jnp.mean(x, axis=(1, 2))
  return nn.Dense(num_classes, dtype=dtype, name='head')(x).astype(jnp.float32)
