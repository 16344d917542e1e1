"""The paper's table: CNN, ResNet, ResNet Init and RiR on one layout and one recipe.

  python launch.py --config=configs/paper.py:row=rir --workdir=runs/paper_rir
  python launch.py --config=configs/paper.py:row=cnn,scale=cpu --workdir=runs/cpu_cnn \
      --config.data.manual_dir=../shared/data/cifar10_jpeg
  python -m benchmarks.paper --dataset=cifar10 --scale=paper --seeds=3 --out=runs/paper

Every row is the RiR layout of Targ, Almeida and Lyman (2016), "18-layer + wide": a stem,
8 RiRBlocks of two layers each (2 at the first width, 3 at twice it with stride 2 first,
3 at four times it, stride 2 first), and the paper's 1x1 conv + BN head. The rows differ
in two switches of rir_jax.models.RiR, a 2x2 ablation of what RiR adds:

  row          layer (model.block)                       outer shortcut (model.outer_shortcut)
  rir          generalized residual block (Eq. 1)        yes: the RiR block of the paper's Fig. 1c
  resnet_init  generalized residual block, as ONE conv   no: a network of generalized blocks
  resnet       conv-BN-ReLU on one stream of 2x width    yes: the 2-layer ResNet block RiR generalizes
  cnn          conv-BN-ReLU on one stream of 2x width    no: a plain 18-layer CNN

The paper's text fixes: the generalized block (Eq. 1: two streams, four 3x3 convs summed
before BN-ReLU, the shortcut on the residual stream only); that removing the residual
stream leaves a standard CNN layer and zeroing the cross and transient weights a ResNet
layer; that ResNet Init is the generalized block computed as a single convolution with the
identity folded into its kernel (rir_jax.models.resnet_init_kernel: the identity is added
in the forward pass, so weight decay sees W, not W + I); and that an RiR block replaces
each layer of a 2-layer ResNet block with a generalized block and keeps the outer
shortcut. The paper is silent on (and this config chooses): the plain rows' width (twice a
stream's, so every row has the same weights per layer: all four within 1% of 9.5M
parameters); the head of the plain rows (the same 1x1 conv + BN head); projection
shortcuts (1x1 conv) where the width changes, in every row.

Recipe, scale=paper (the paper's): SGD momentum 0.9, batch 500, L2 1e-4, 82 epochs, lr 0.1
divided by 10 after epochs 42 and 62, crop + flip, float32. Published: RiR 94.99% on
CIFAR-10 and 77.10% on CIFAR-100 (the other rows' numbers are not recorded here).

scale=cpu: the same four rows at ~0.27M parameters (widths 8/16/32 per stream, the
ResNet head: global average pool + dense) on cifar10_jpeg, batch 128, cosine from lr 0.1,
L2 5e-4, 15 epochs, bfloat16 compute: about 30 minutes a run on a 2-core CPU.
`smoke` shrinks either to seconds on synthetic images.
"""
from __future__ import annotations

from configs import default

ROWS = {  # row -> the RiR switches that make it
    "cnn": {"block": "plain", "outer_shortcut": False},
    "resnet": {"block": "plain", "outer_shortcut": True},
    "resnet_init": {"block": "generalized", "outer_shortcut": False, "single_conv": True},
    "rir": {"block": "generalized", "outer_shortcut": True},
}
SCALES = ("paper", "cpu")


def get_config(arg: str | None = None):
  args = default.parse_arg(arg, row="rir", scale="paper", smoke=False,
                           choices={"row": ROWS, "scale": SCALES})
  config = default.get_config()
  if args.scale == "paper":
    config.model = default.model_config("rir_paper", **ROWS[args.row])
    config.data.name = "cifar10"
    config.batch_size = 500
    config.num_epochs = 82.0
    config.schedule.boundaries_epochs = (42.0, 62.0)
    config.checkpoint_every_steps = 1000
  else:
    config.model = default.model_config("rir", **ROWS[args.row])
    config.data.name = "cifar10_jpeg"
    config.batch_size = 128
    config.num_epochs = 15.0
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.schedule.boundaries_epochs = ()
    config.dtype = "bfloat16"
    config.checkpoint_every_steps = 390  # about an epoch: a killed study loses little
  config.keep_checkpoints = 2
  return default.smoke(config) if args.smoke else config
