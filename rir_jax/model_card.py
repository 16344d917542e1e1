"""WORKDIR/model.json: how to rebuild a run's model and feed it, written when training starts.

    {"model": {"name": "cnn", "num_classes": 10, ...its arguments},
     "dtype": "float32", "kernels": "auto", "preprocess": {mean, std, class_names, ...}}

Cards written before `kernels` was renamed hold "conv_impl" (xla, onednn or auto) instead.
A card (or an export's) that this version cannot rebuild its model from, such as one a
newer version wrote, or one whose arrays belong to another model, is one CardError line.
"""
from __future__ import annotations

import json
import logging
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from rir_jax import models, renamed, storage, trainer
from rir_jax.data import Dataset
from rir_jax.errors import reason
from rir_jax.kernels import select
from rir_jax.preprocess import Preprocess

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
_KEYS = ("model.name", "model.num_classes", "dtype", "preprocess")
_NEWER = "written by a newer rir-jax?"


class CardError(ValueError):
  """A card this version cannot rebuild a model from; the message is one line."""


def describe(config: ml_collections.ConfigDict, dataset: Dataset) -> dict:
  """The card of a run about to train `config` on `dataset` (its training split)."""
  arguments = models.config_arguments(config.model.name, config.model)
  preprocess = Preprocess(
      dataset=dataset.name, class_names=tuple(dataset.class_names),
      image_shape=tuple(int(n) for n in dataset.train_images.shape[1:]),
      mean=tuple(float(m) for m in dataset.mean), std=tuple(float(s) for s in dataset.std),
      dtype=config.dtype)
  card = {"model": {"name": config.model.name, "num_classes": dataset.num_classes,
                    **arguments},
          "dtype": config.dtype, "kernels": config.kernels,
          "preprocess": preprocess.to_json()}
  return json.loads(json.dumps(card))  # tuples as lists: the card as it reads back


def write(workdir: pathlib.Path, card: dict) -> None:
  """Written whole or not at all: neither a kill nor a full disk leaves half a card."""
  storage.write_atomic(workdir / MODEL_FILE, json.dumps(card, indent=2, sort_keys=True) + "\n")


def read(workdir: pathlib.Path) -> dict:
  """The card; FileNotFoundError where there is none, storage.DamagedFile where it is
  damaged."""
  path = workdir / MODEL_FILE
  card = storage.read_json_object(path)
  if not _is_card(card):
    raise storage.DamagedFile(f"{path} is damaged (not a model card: {', '.join(_KEYS)} expected)")
  return card


def _is_card(card) -> bool:
  return (isinstance(card, dict) and isinstance(card.get("model"), dict)
          and isinstance(card["model"].get("name"), str)
          and isinstance(card["model"].get("num_classes"), int)
          and isinstance(card.get("preprocess"), dict) and "dtype" in card)


def check(card) -> None:
  """Raises CardError unless this version knows the card's model, its arguments, its
  dtype and its preprocessing."""
  if not _is_card(card):
    raise CardError(f"not a model card ({', '.join(_KEYS)} expected)")
  name = card["model"]["name"]
  if name not in models.MODEL_NAMES:
    raise CardError(f"its model {name!r} is not one this rir-jax knows "
                    f"({', '.join(models.MODEL_NAMES)}): {_NEWER}")
  unknown = sorted(set(card["model"]) - {"name", "num_classes"}
                   - set(models.model_arguments(name)))
  if unknown:
    raise CardError(f"its model {name!r} has argument(s) this rir-jax does not know "
                    f"({', '.join(unknown)}): {_NEWER}")
  if card["dtype"] not in trainer.DTYPES:
    raise CardError(f"its dtype {card['dtype']!r} is not one this rir-jax knows "
                    f"({', '.join(trainer.DTYPES)}): {_NEWER}")
  try:
    preprocess(card)
  except (KeyError, TypeError, ValueError) as error:
    raise CardError(f"its preprocess is damaged or incomplete ({reason(error)})") from None


def build_model(card: dict, *, kernels: str | None = None) -> nn.Module:
  """The card's model (a checked card); `kernels` overrides the kernels it trained with
  (same math), which otherwise run where they can (kernels_here)."""
  arguments = {k: tuple(v) if isinstance(v, list) else v
               for k, v in card["model"].items() if k not in ("name", "num_classes")}
  return select.build_model(card["model"]["name"], num_classes=card["model"]["num_classes"],
                            kernels=kernels or kernels_here(card),
                            dtype=trainer.DTYPES[card["dtype"]], **arguments)


def trained_kernels(card: dict) -> str:
  """The kernels the card's run trained with (their config value, auto included)."""
  return renamed.saved(card).get("kernels", "auto")  # an older card holds conv_impl


def kernels_here(card: dict) -> str:
  """The kernels the card's run trained with where they can run here, else auto's choice:
  a model trained on the CPU library still loads on a GPU box, or where the library does
  not build (the same math; the last bits of its outputs may differ)."""
  trained = trained_kernels(card)
  try:
    select.resolve(trained)  # raises where they cannot run here
    return trained
  except (RuntimeError, ValueError) as error:
    log.warning("the model trained on kernels %r, which cannot run here (%s): it runs on "
                "kernels %r, the same math", trained, reason(error), select.resolve("auto"))
    return "auto"


def check_variables(model: nn.Module, card: dict, variables: dict) -> None:
  """Raises CardError unless `variables` are what the card's `model` holds: names and
  shapes of every parameter and batch statistic (arrays of another run's model, say)."""
  shape = tuple(card["preprocess"]["image_shape"])
  try:
    expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                 jnp.zeros((1, *shape)), train=False))
  except Exception as error:  # noqa: BLE001 - a damaged card's arguments fail in many ways
    raise CardError(f"its model cannot be built from its arguments ({reason(error)})") from None
  for collection in ("params", "batch_stats"):
    want = traverse_util.flatten_dict(dict(expected.get(collection, {})), sep="/")
    have = traverse_util.flatten_dict(dict(variables.get(collection, {})), sep="/")
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing:
      raise CardError(f"its {collection} lack {missing[0]}, which the card's model has: "
                      "arrays of another model?")
    if extra:
      raise CardError(f"its {collection} hold {extra[0]}, which the card's model lacks: "
                      "arrays of another model?")
    for name in sorted(want):
      if tuple(np.shape(have[name])) != tuple(want[name].shape):
        raise CardError(f"its {collection} {name} has shape {tuple(np.shape(have[name]))}, "
                        f"the card's model {tuple(want[name].shape)}: arrays of another model?")


def preprocess(card: dict) -> Preprocess:
  return Preprocess.from_json(card["preprocess"])
