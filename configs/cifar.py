"""CIFAR: the paper's RiR with the paper's recipe, or ResNet-20 and its plain CNN with He et al.'s.

  python launch.py --config=configs/cifar.py:model=rir --workdir=runs/rir_cifar
  python launch.py --config=configs/cifar.py:model=resnet --workdir=runs/resnet20
  python launch.py --config=configs/cifar.py:model=resnet --workdir=runs/resnet110 \
      --config.model.depth=110
  python launch.py --config=configs/cifar.py:model=cnn,dataset=cifar100 --workdir=runs/cnn_c100
  python launch.py --config=configs/cifar.py:model=cnn,smoke --workdir=/tmp/smoke

Arguments: model=cnn|resnet|rir (default rir), dataset=cifar10|cifar100|cifar10_jpeg
(default cifar10), smoke (seconds on a CPU, on synthetic images: configs/default.py's smoke).

model=rir: the paper's 18-layer + wide RiR (`rir_paper`, ~9.5M parameters) with the
paper's recipe: batch 500, 82 epochs, lr 0.1 divided by 10 after epochs 42 and 62. The same
config as configs/rir_cifar.py, whose docstring has the details.

model=resnet: pre-activation ResNet-20 with He et al.'s recipe: SGD momentum 0.9, batch
128, weight decay 1e-4, 164 epochs (64k steps), lr 0.1 divided by 10 at 32k and 48k
steps, crop + flip. He et al. report 91.25% for ResNet-20 and 93.57% for ResNet-110 on
CIFAR-10.

model=cnn: the plain CNN baseline (no shortcuts, ~0.27M parameters, matched to ResNet-20)
with the same recipe as model=resnet. Expect well below ResNet-20's 91%: the point of the
baseline is to show what the shortcuts buy at equal parameters.
"""
from __future__ import annotations

from configs import default

HE_MODELS = {"cnn": {}, "resnet": {"depth": 20}}  # model= -> its arguments
MODELS = (*HE_MODELS, "rir")
DATASETS = ("cifar10", "cifar100", "cifar10_jpeg")


def get_config(arg: str | None = None):
  args = default.parse_arg(arg, model="rir", dataset="cifar10", smoke=False,
                           choices={"model": MODELS, "dataset": DATASETS})
  config = paper_recipe() if args.model == "rir" else he_recipe(args.model)
  config.data.name = args.dataset
  return default.smoke(config) if args.smoke else config


def paper_recipe():
  """Targ et al.'s RiR and recipe (SGD and L2 1e-4: configs/default.py's)."""
  config = default.get_config()
  config.model = default.model_config("rir_paper")
  config.batch_size = 500
  config.num_epochs = 82.0
  config.schedule.boundaries_epochs = (42.0, 62.0)
  config.checkpoint_every_steps = 1000
  return config


def he_recipe(model: str):
  """He et al.'s ResNet-20 recipe, for ResNet-20 or the CNN of its layers."""
  config = default.get_config()
  config.model = default.model_config(model, **HE_MODELS[model])
  config.batch_size = 128
  config.num_epochs = 164.0
  config.schedule.boundaries_epochs = (82.0, 123.0)
  config.checkpoint_every_steps = 2000
  return config
