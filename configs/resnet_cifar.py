"""Pre-activation ResNet-20 with He et al.'s CIFAR recipe.

  python launch.py --config=configs/resnet_cifar.py --workdir=runs/resnet20
  python launch.py --config=configs/resnet_cifar.py --workdir=runs/resnet110 --config.model.depth=110

SGD momentum 0.9, batch 128, weight decay 1e-4, 164 epochs (64k steps), lr 0.1 divided
by 10 at 32k and 48k steps, crop + flip. He et al. report 91.25% for ResNet-20 and
93.57% for ResNet-110 on CIFAR-10.
"""
from __future__ import annotations

from configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model = default.model_config("resnet", depth=20)
  config.data.name = "cifar10"
  config.batch_size = 128
  config.num_epochs = 164.0
  config.schedule.boundaries_epochs = (82.0, 123.0)
  config.checkpoint_every_steps = 2000
  return default.apply_variant(config, arg)
