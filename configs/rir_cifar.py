"""The paper's RiR (18-layer + wide, ~9.5M parameters) with the paper's recipe on CIFAR-10.

  python launch.py --config=configs/rir_cifar.py --workdir=runs/rir_cifar
  python launch.py --config=configs/rir_cifar.py --workdir=runs/rir_c100 --config.data.name=cifar100

SGD momentum 0.9, batch 500, L2 1e-4, 82 epochs, lr 0.1 divided by 10 after epochs 42
and 62, crop + flip. The paper reports 94.99% (CIFAR-10) and 77.10% (CIFAR-100); the
best public reimplementation reached 94.43%. About 8,200 steps. This project has not yet
trained it to the end: its step ran at 20,234 img/s in bf16 (10,543 in float32) on one
H100 (benchmarks/PERFORMANCE.md), which puts the 82 epochs at about 3.5 minutes of steps
in bf16 there; a 2-core CPU takes seconds per step (use `:smoke` there). The same model
is the RiR row of configs/paper.py.
"""
from __future__ import annotations

from configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model = default.model_config("rir_paper")
  config.data.name = "cifar10"
  config.batch_size = 500
  config.num_epochs = 82.0
  config.schedule.boundaries_epochs = (42.0, 62.0)
  config.checkpoint_every_steps = 1000
  config = default.apply_variant(config, arg)
  if arg == "smoke":  # 9.5M parameters: a CPU takes seconds per step, so fewer and smaller
    config.batch_size, config.eval_batch_size = 16, 128
    config.num_train_steps = config.eval_every_steps = 4
    config.checkpoint_every_steps = 2
  return config
