"""`--config.init_from=DIR_OR_FILE`: a new run starts from another run's (or export's) weights.

Parameters are taken by name and must match in shape. With --config.init_new_head=True,
those whose shapes differ only where the source's class count stands (the classifier,
e.g. CIFAR-10 weights for CIFAR-100) keep their fresh initialisation. The optimizer
starts afresh; batch-norm statistics come too unless --config.init_batch_stats=False.
"""
from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from rir_jax import loading
from rir_jax.errors import ConfigError

log = logging.getLogger(__name__)


def source(config: ml_collections.ConfigDict) -> loading.Trained:
  """The run or export named by init_from (a workdir's best checkpoint)."""
  try:
    return loading.load_trained(config.init_from, "best")
  except loading.LoadError as error:
    raise ConfigError(f"--config.init_from: {error}") from error


def check(config: ml_collections.ConfigDict, model, image_shape: tuple[int, ...],
          num_classes: int) -> None:
  """Raises ConfigError (one line) unless init_from fits `model`; computes nothing."""
  fresh = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                            jnp.zeros((1, *image_shape)), train=False))
  merge(fresh, source(config), config, num_classes)


def apply(state, config: ml_collections.ConfigDict, num_classes: int, sharding):
  """`state` with init_from's parameters (and batch statistics) put in, placed by `sharding`."""
  src = source(config)
  fresh = {"params": state.params, "batch_stats": state.batch_stats}
  merged = jax.device_put(merge(fresh, src, config, num_classes), sharding)
  log.info("initialised from %s (step %d)", src.source, src.step)
  return state.replace(params=merged["params"], batch_stats=merged["batch_stats"])


def merge(fresh: dict[str, Any], src: loading.Trained, config: ml_collections.ConfigDict,
          num_classes: int) -> dict[str, Any]:
  """{"params", "batch_stats"}: `fresh`'s tree with the source's values put in.

  Raises ConfigError naming the first parameter that does not fit.
  """
  src_classes = src.preprocess.num_classes
  collections = ("params", "batch_stats") if config.init_batch_stats else ("params",)
  merged = dict(fresh)
  for collection in collections:
    merged[collection] = _merge_tree(
        collection, fresh.get(collection, {}), src.variables.get(collection, {}),
        new_head=config.init_new_head, classes=(src_classes, num_classes))
  return merged


def _merge_tree(collection: str, fresh: dict, taken: dict, *, new_head: bool,
                classes: tuple[int, int]) -> dict:
  flat_fresh = traverse_util.flatten_dict(fresh, sep="/")
  flat_taken = traverse_util.flatten_dict(taken, sep="/")
  extra = sorted(set(flat_taken) - set(flat_fresh))
  if extra:
    raise ConfigError(f"--config.init_from has {collection} {extra[0]}, which this model "
                      "lacks (another model? init_from needs the same --config.model)")
  merged = {}
  for name, value in flat_fresh.items():
    if name not in flat_taken:
      raise ConfigError(f"--config.init_from has no {collection} {name} (another model? "
                        "init_from needs the same --config.model)")
    src_shape, shape = np.shape(flat_taken[name]), np.shape(value)
    if src_shape == shape:
      merged[name] = np.asarray(flat_taken[name], dtype=value.dtype)
    elif new_head and _only_classes_differ(src_shape, shape, classes):
      merged[name] = value  # the classifier, re-initialised for this class count
    else:
      hint = (f"; --config.init_new_head=True re-initialises the classifier for "
              f"{classes[1]} classes instead of {classes[0]}"
              if classes[0] != classes[1] and not new_head else "")
      raise ConfigError(f"--config.init_from: {collection} {name} has shape {src_shape} there "
                        f"and {shape} here{hint}")
  return traverse_util.unflatten_dict(merged, sep="/")


def _only_classes_differ(src_shape, shape, classes: tuple[int, int]) -> bool:
  """Whether every differing dimension is the source's class count become this run's."""
  if len(src_shape) != len(shape) or classes[0] == classes[1]:
    return False
  return all(a == b or (a, b) == classes for a, b in zip(src_shape, shape))
