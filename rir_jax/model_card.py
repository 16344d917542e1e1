"""WORKDIR/model.json: how to rebuild a run's model and feed it, written when training starts.

    {"model": {"name": "cnn", "num_classes": 10, ...its arguments},
     "dtype": "float32", "kernels": "auto", "preprocess": {mean, std, class_names, ...}}

Cards written before `kernels` was renamed hold "conv_impl" (xla, onednn or auto) instead.
"""
from __future__ import annotations

import json
import pathlib

import flax.linen as nn
import ml_collections

from rir_jax import models, renamed, storage, trainer
from rir_jax.data import Dataset
from rir_jax.kernels import select
from rir_jax.preprocess import Preprocess

MODEL_FILE = "model.json"
_KEYS = ("model.name", "model.num_classes", "dtype", "preprocess")


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
  if not (isinstance(card.get("model"), dict)
          and {"name", "num_classes"} <= card["model"].keys()
          and isinstance(card.get("preprocess"), dict) and "dtype" in card):
    raise storage.DamagedFile(f"{path} is damaged (not a model card: {', '.join(_KEYS)} expected)")
  return card


def build_model(card: dict, *, kernels: str | None = None) -> nn.Module:
  """The card's model; `kernels` overrides the kernels it trained with (same math)."""
  arguments = {k: tuple(v) if isinstance(v, list) else v
               for k, v in card["model"].items() if k not in ("name", "num_classes")}
  return select.build_model(card["model"]["name"], num_classes=card["model"]["num_classes"],
                            kernels=kernels or trained_kernels(card),
                            dtype=trainer.DTYPES[card["dtype"]], **arguments)


def trained_kernels(card: dict) -> str:
  """The kernels the card's run trained with (their config value, auto included)."""
  return renamed.saved(card)["kernels"]  # an older card holds conv_impl


def preprocess(card: dict) -> Preprocess:
  return Preprocess.from_json(card["preprocess"])
