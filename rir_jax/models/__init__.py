"""Models by name: a plain CNN, a pre-activation ResNet, ResNet in ResNet.

Every model takes NHWC float images (already normalised), is called as
`model.apply(variables, x, train=...)` and returns float32 logits (no softmax);
batch-norm statistics live in the 'batch_stats' collection. In training, `mask=` (one
bool per example) leaves the False examples (padding) out of those statistics.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax

from rir_jax.models.cnn import CNN
from rir_jax.models.resnet import PreActBlock, ResNet
from rir_jax.models.rir import (GeneralizedResidualBlock, RiR, RiRBlock, RiRPaper,
                                ResNetInit, resnet_init_kernel)

_MODELS: dict[str, Callable[..., nn.Module]] = {
    'cnn': CNN,
    'resnet': ResNet,
    'rir': RiR,
    'resnet_init': ResNetInit,
    'rir_paper': RiRPaper,
}
MODEL_NAMES = tuple(_MODELS)


def _arguments(factory: Callable[..., nn.Module]) -> list[str]:
  """The keyword arguments a registered model accepts besides num_classes.

  A preset (functools.partial) fixes some arguments: those are not offered, so
  'resnet_init' cannot be turned back into 'rir' by a config.
  """
  fixed = set()
  if isinstance(factory, functools.partial):
    fixed, factory = set(factory.keywords), factory.func
  hidden = fixed | {'num_classes', 'parent', 'name'}
  return [f.name for f in dataclasses.fields(factory) if f.name not in hidden]


def get_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
  """The model registered as `name`; kwargs are its attributes (see its class)."""
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
  accepted = _arguments(_MODELS[name])
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise TypeError(f"model {name!r} got unknown argument(s) {', '.join(unknown)}; "
                    f"it accepts: {', '.join(accepted)}")
  return _MODELS[name](num_classes=num_classes, **kwargs)


def count_params(params: Any) -> int:
  """Number of scalars in a pytree of arrays, e.g. `variables['params']`."""
  return sum(leaf.size for leaf in jax.tree.leaves(params))


__all__ = [
    'CNN', 'GeneralizedResidualBlock', 'MODEL_NAMES', 'PreActBlock', 'ResNet',
    'ResNetInit', 'RiR', 'RiRBlock', 'RiRPaper', 'count_params', 'get_model',
    'resnet_init_kernel',
]
