"""The parameter-matched (~0.27M) CNN, ResNet-20 and RiR on MNIST or Fashion-MNIST.

  python launch.py --config=configs/mnist.py:model=cnn --workdir=runs/mnist_cnn \
      --config.data.manual_dir=../shared/data/mnist      # offline: the four IDX files
  python launch.py --config=configs/mnist.py:model=rir,dataset=fashion_mnist \
      --workdir=runs/rir_fashion
  python launch.py --config=configs/mnist.py:model=resnet,smoke --workdir=/tmp/smoke

Arguments: model=cnn|resnet|rir (default rir), dataset=mnist|fashion_mnist (default
mnist), smoke (a few seconds on a CPU: configs/default.py's smoke).

One recipe for the three: SGD momentum 0.9, batch 128, weight decay 5e-4, cosine decay from
0.05 over 5 epochs, no augmentation. One run each (benchmarks/README.md, "The main
command"): CNN 99.56%, ResNet-20 99.51%, RiR 99.20% MNIST test accuracy.
"""
from __future__ import annotations

from configs import default

MODELS = {"cnn": {}, "resnet": {"depth": 20}, "rir": {}}  # model= -> its arguments
DATASETS = ("mnist", "fashion_mnist")


def get_config(arg: str | None = None):
  args = default.parse_arg(arg, model="rir", dataset="mnist", smoke=False,
                           choices={"model": MODELS, "dataset": DATASETS})
  config = default.get_config()
  config.model = default.model_config(args.model, **MODELS[args.model])
  config.data.name = args.dataset
  config.batch_size = 128
  config.num_epochs = 5.0
  config.optimizer.learning_rate = 0.05
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "cosine"
  config.schedule.boundaries_epochs = ()
  config.checkpoint_every_steps = 1000
  return default.smoke(config) if args.smoke else config
