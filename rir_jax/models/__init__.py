"""Models by name: a plain CNN, a pre-activation ResNet, ResNet in ResNet.

Every model takes NHWC float images (already normalised), is called as
`model.apply(variables, x, train=...)` and returns float32 logits (no softmax);
batch-norm statistics live in the 'batch_stats' collection. In training, `mask=` (one
bool per example) leaves the False examples (padding) out of those statistics. Each
builds its convolutions and batch norms from the modules it is given, `conv` and `norm`
(rir_jax.models.layers), plain flax by default.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

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
# Model attributes the training code sets (from top-level config keys), not `model`'s keys.
TRAINING_ARGUMENTS = ('dtype', 'conv', 'norm', 'stream_norm')


def _fields(factory: Callable[..., nn.Module]) -> list[dataclasses.Field]:
  """The dataclass fields a registered model accepts besides num_classes.

  A preset (functools.partial) fixes some arguments: those are not offered, so
  'resnet_init' cannot be turned back into 'rir' by a config.
  """
  fixed = set()
  if isinstance(factory, functools.partial):
    fixed, factory = set(factory.keywords), factory.func
  hidden = fixed | {'num_classes', 'parent', 'name'}
  return [f for f in dataclasses.fields(factory) if f.name not in hidden]


def _factory(name: str) -> Callable[..., nn.Module]:
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
  return _MODELS[name]


def model_arguments(name: str) -> list[str]:
  """Every keyword argument model `name` takes besides num_classes."""
  return [f.name for f in _fields(_factory(name))]


def model_defaults(name: str) -> dict[str, Any]:
  """Every keyword argument a config's `model` may set for model `name`, with its default.

  The configs derive their `model` from this, so each argument is a --config.model.* key.
  """
  return {f.name: f.default for f in _fields(_factory(name))
          if f.name not in TRAINING_ARGUMENTS}


def _as_plain(value: Any) -> Any:
  return list(value) if isinstance(value, (tuple, list)) else value


def config_arguments(name: str, model_config: Mapping[str, Any]) -> dict[str, Any]:
  """The arguments for model `name` in a config's `model` (without its `name`).

  A key model `name` does not take is dropped when it holds the default another model
  gives it: it came with the config's own model (`--config.model.name=resnet` on a CNN
  config). Set to anything else, it stays, and get_model rejects it.
  """
  accepted = set(model_arguments(name)) if name in _MODELS else set()
  others = [model_defaults(other) for other in MODEL_NAMES if other != name]
  def from_another_model(key, value):
    return any(key in d and _as_plain(d[key]) == _as_plain(value) for d in others)
  return {k: v for k, v in model_config.items()
          if k != 'name' and (k in accepted or not from_another_model(k, v))}


def get_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
  """The model registered as `name`; kwargs are its attributes (see its class)."""
  accepted = model_arguments(name)
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
    'ResNetInit', 'RiR', 'RiRBlock', 'RiRPaper', 'TRAINING_ARGUMENTS', 'config_arguments',
    'count_params', 'get_model', 'model_arguments', 'model_defaults', 'resnet_init_kernel',
]
