"""The plain CNN baseline (~0.27M parameters) on MNIST; the recipe the MNIST configs share.

  python launch.py --config=configs/cnn_mnist.py --workdir=runs/cnn_mnist \
      --config.data.manual_dir=../shared/data/mnist      # offline: the four IDX files
  python launch.py --config=configs/cnn_mnist.py --workdir=runs/cnn_fashion \
      --config.data.name=fashion_mnist

SGD momentum 0.9, batch 128, weight decay 5e-4, cosine decay from 0.05 over 5 epochs, no
augmentation. Reaches >= 99.0% MNIST test accuracy (see README for the measured figure).
"""
from __future__ import annotations

from configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model = default.model_config("cnn")
  config.data.name = "mnist"
  config.batch_size = 128
  config.num_epochs = 5.0
  config.optimizer.learning_rate = 0.05
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "cosine"
  config.schedule.boundaries_epochs = ()
  config.checkpoint_every_steps = 1000
  return default.apply_variant(config, arg)
