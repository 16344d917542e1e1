"""The parameter-matched RiR (~0.27M parameters) on MNIST, recipe of configs/cnn_mnist.py.

  python launch.py --config=configs/rir_mnist.py --workdir=runs/rir_mnist \
      --config.data.manual_dir=../shared/data/mnist

One measured run: 99.20% MNIST test accuracy (README, "Results").
"""
from __future__ import annotations

from configs import cnn_mnist


def get_config(arg: str | None = None):
  config = cnn_mnist.get_config(arg)
  config.model = cnn_mnist.default.model_config("rir")
  return config
