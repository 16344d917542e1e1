"""Pre-activation ResNet-20 (~0.27M parameters) on MNIST, recipe of configs/cnn_mnist.py.

  python launch.py --config=configs/resnet_mnist.py --workdir=runs/resnet_mnist \
      --config.data.manual_dir=../shared/data/mnist

One measured run: 99.51% MNIST test accuracy (README, "Results").
"""
from __future__ import annotations

from configs import cnn_mnist


def get_config(arg: str | None = None):
  config = cnn_mnist.get_config(arg)
  config.model = cnn_mnist.default.model_config("resnet", depth=20)
  return config
