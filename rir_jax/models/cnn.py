"""A plain CNN: the 'plain' baseline of He et al. (2015), without shortcuts."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rir_jax.models import layers

DOWNSAMPLES = ('conv', 'max_pool')


class CNN(nn.Module):
  """Stem conv, then stages of conv-BN-ReLU, global average pool, dense.

  The defaults are He et al.'s plain-20 for CIFAR: a 3x3 stem conv at 16 channels,
  then 3 stages of 6 convs at 16/32/64 channels (19 convs + dense), about 0.27M
  parameters: the same count as the zero-padded ResNet-20, so the two are matched.
  Every stage after the first halves the resolution, with its first conv at stride 2
  (`downsample='conv'`) or with a 2x2 max pool before it (`downsample='max_pool'`).

  Attributes:
    num_classes: number of logits.
    widths: channels of each stage; the stem has `widths[0]`.
    convs_per_stage: 3x3 conv-BN-ReLU layers per stage.
    downsample: 'conv' or 'max_pool', how stages after the first halve resolution.
    dtype: compute dtype; parameters stay float32.
    bn_momentum: batch-norm running-average momentum.
    bn_epsilon: batch-norm epsilon.
    conv: the convolutions' module (flax.linen.Conv's arguments; see layers).
    norm: the batch norms' module (layers.BatchNorm's arguments; see layers).
  """
  num_classes: int
  widths: Sequence[int] = (16, 32, 64)
  convs_per_stage: int = 6
  downsample: str = 'conv'
  dtype: layers.Dtype = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  conv: layers.ModuleDef = nn.Conv
  norm: layers.ModuleDef = layers.BatchNorm

  def __post_init__(self):
    layers.check_choice('downsample', self.downsample, DOWNSAMPLES)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> jax.Array:
    conv, norm = layers.bound(self)

    def conv_bn_relu(x, features, strides=1):
      x = layers.conv(conv, features, 3, strides)(x)
      return norm(use_running_average=not train, relu=True)(x, mask=mask)

    x = conv_bn_relu(x, self.widths[0])
    for stage, width in enumerate(self.widths):
      for index in range(self.convs_per_stage):
        strides = 1
        if stage > 0 and index == 0:
          if self.downsample == 'max_pool':
            # 'SAME' keeps odd sizes (MNIST's 7x7) from losing a row, like ceil_mode.
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
          else:
            strides = 2
        x = conv_bn_relu(x, width, strides)
    return layers.classifier_logits(x, self.num_classes, self.dtype)
