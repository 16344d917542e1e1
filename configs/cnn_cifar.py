"""The plain CNN baseline (no shortcuts, ~0.27M parameters, matched to ResNet-20) on CIFAR-10.

  python launch.py --config=configs/cnn_cifar.py --workdir=runs/cnn_cifar

Same recipe as configs/resnet_cifar.py. Expect well below ResNet-20's 91%: the point of
the baseline is to show what the shortcuts buy at equal parameters.
"""
from __future__ import annotations

from configs import resnet_cifar


def get_config(arg: str | None = None):
  config = resnet_cifar.get_config(arg)
  config.model = resnet_cifar.default.model_config("cnn")
  return config
