"""The paper's RiR (18-layer + wide, ~9.5M parameters) with the paper's recipe on CIFAR-10.

  python launch.py --config=configs/rir_cifar.py --workdir=runs/rir_cifar
  python launch.py --config=configs/rir_cifar.py:dataset=cifar100 --workdir=runs/rir_c100

SGD momentum 0.9, batch 500, L2 1e-4, 82 epochs, lr 0.1 divided by 10 after epochs 42
and 62, crop + flip. The paper reports 94.99% (CIFAR-10) and 77.10% (CIFAR-100); the
best public reimplementation reached 94.43%. About 8,200 steps. This project has not yet
trained it to the end: its step ran at 20,234 img/s in bf16 (10,543 in float32) on one
H100 (benchmarks/PERFORMANCE.md), which puts the 82 epochs at about 3.5 minutes of steps
in bf16 there; a 2-core CPU takes seconds per step (use `:smoke` there). The same model
is the RiR row of configs/paper.py.

This is configs/cifar.py:model=rir under the name of the README's main command, with
cifar.py's other arguments: dataset=cifar10|cifar100|cifar10_jpeg, smoke.
"""
from __future__ import annotations

from configs import cifar, default


def get_config(arg: str | None = None):
  args = default.parse_arg(arg, dataset="cifar10", smoke=False)
  return cifar.get_config(f"model=rir,dataset={args.dataset},smoke={args.smoke}")
