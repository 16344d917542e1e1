"""Pre-activation ResNet-(6n+2) for 32x32 images (He et al. 2016, "Identity mappings")."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rir_jax.models import layers


class PreActBlock(nn.Module):
  """Basic pre-activation block: x + conv(relu(BN(conv(relu(BN(x)))))).

  Where the shape changes, a 'projection' shortcut is a 1x1 conv of the pre-activated
  input relu(BN(x)), as in He et al.'s code; 'zero_pad' subsamples the raw x and
  appends zero channels (option A), adding no parameters. `conv` and `norm` are the
  modules of its convolutions and batch norms (see layers).
  """
  features: int
  strides: int = 1
  shortcut: str = 'zero_pad'
  conv: layers.ModuleDef = nn.Conv
  norm: layers.ModuleDef = layers.BatchNorm

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> jax.Array:
    def bn_relu(y):
      return self.norm(use_running_average=not train, relu=True)(y, mask=mask)

    y = bn_relu(x)
    residual = layers.shortcut(self.conv, x, self.features, self.strides, self.shortcut,
                               projection_input=y)
    y = layers.conv(self.conv, self.features, 3, self.strides)(y)
    y = layers.conv(self.conv, self.features, 3)(bn_relu(y))
    return y + residual


class ResNet(nn.Module):
  """Full pre-activation ResNet-(6n+2), CIFAR layout.

  3x3 stem conv at 16k channels; three stages of n = (depth - 2) / 6 PreActBlocks at
  16k, 32k, 64k channels (k = `width`), the first block of stages 2 and 3 at stride 2;
  final BN-ReLU; global average pool; dense. Depth 20 has about 0.27M parameters.
  Works on any input size (MNIST's 28x28 becomes 14x14 and 7x7).

  Attributes:
    num_classes: number of logits.
    depth: 6n + 2 (20, 32, 44, 56, 110, ...).
    width: channel multiplier k.
    shortcut: 'zero_pad' (option A, default) or 'projection' where the shape changes.
    dtype: compute dtype; parameters stay float32.
    bn_momentum: batch-norm running-average momentum.
    bn_epsilon: batch-norm epsilon.
    conv: the convolutions' module (flax.linen.Conv's arguments; see layers).
    norm: the batch norms' module (layers.BatchNorm's arguments; see layers).
  """
  num_classes: int
  depth: int = 20
  width: int = 1
  shortcut: str = 'zero_pad'
  dtype: layers.Dtype = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  conv: layers.ModuleDef = nn.Conv
  norm: layers.ModuleDef = layers.BatchNorm

  def __post_init__(self):
    if self.depth < 8 or (self.depth - 2) % 6:
      raise ValueError(f'resnet depth must be 6n+2 with n >= 1 (20, 32, 56, 110, ...); '
                       f'got {self.depth}')
    layers.check_choice('shortcut', self.shortcut, layers.SHORTCUTS)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> jax.Array:
    blocks_per_stage = (self.depth - 2) // 6
    conv, norm = layers.bound(self)
    x = layers.conv(conv, 16 * self.width, 3, name='stem')(x)
    for stage, multiplier in enumerate((1, 2, 4)):
      for index in range(blocks_per_stage):
        x = PreActBlock(16 * self.width * multiplier,
                        strides=2 if stage > 0 and index == 0 else 1,
                        shortcut=self.shortcut, conv=conv, norm=norm)(x, train=train, mask=mask)
    x = norm(use_running_average=not train, relu=True)(x, mask=mask)
    return layers.classifier_logits(x, self.num_classes, self.dtype)
