"""ResNet in ResNet (Targ, Almeida and Lyman 2016) and its ResNet Init form."""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rir_jax.models import layers

HEADS = ('dense', 'conv_bn')
BLOCKS = ('generalized', 'plain')
KERNEL_NAMES = ('kernel_rr', 'kernel_tr', 'kernel_rt', 'kernel_tt')


def resnet_init_kernel(kernel_rr: jax.Array, kernel_tr: jax.Array,
                       kernel_rt: jax.Array, kernel_tt: jax.Array, *,
                       add_identity: bool) -> jax.Array:
  """The single 3x3 kernel over concat(r, t) that computes a generalized block.

  The paper writes it (output rows, input columns) as [[W_rr + I, W_tr], [W_rt, W_tt]];
  in flax's HWIO layout the input channels come first, so this is the transpose:
  kernel[..., :c_in, :c_out] = W_rr (+ I), kernel[..., c_in:, :c_out] = W_tr,
  kernel[..., :c_in, c_out:] = W_rt, kernel[..., c_in:, c_out:] = W_tt,
  where kernel_xy maps stream x to stream y. I is the identity at the centre tap,
  the identity shortcut folded into the convolution; it is added here, never stored,
  so weight decay acts on W_rr and not on W_rr + I.
  """
  if add_identity:
    centre, channels = kernel_rr.shape[0] // 2, kernel_rr.shape[-1]
    kernel_rr = kernel_rr.at[centre, centre].add(jnp.eye(channels, dtype=kernel_rr.dtype))
  from_r = jnp.concatenate([kernel_rr, kernel_rt], axis=-1)
  from_t = jnp.concatenate([kernel_tr, kernel_tt], axis=-1)
  return jnp.concatenate([from_r, from_t], axis=-2)


class GeneralizedResidualBlock(nn.Module):
  """The generalized residual block, Eq. 1 of the paper:

      r' = relu(BN_r(conv(r, W_rr) + conv(t, W_tr) + shortcut(r)))
      t' = relu(BN_t(conv(r, W_rt) + conv(t, W_tt)))

  r is the residual stream, t the transient stream, both of width `features` on
  output. The four 3x3 kernels are parameters 'kernel_rr', 'kernel_tr', 'kernel_rt',
  'kernel_tt' (kernel_xy maps stream x to stream y). The shortcut feeds r only and is
  added before BN/ReLU: identity, or, where width or stride changes, a 1x1 conv
  'projection' or zero padding. With W_tr = W_rt = W_tt = 0 the r stream is a
  one-conv ResNet block; without the r stream, t is a plain conv-BN-ReLU layer.

  `single_conv=True` computes the same function as ONE convolution over concat(r, t)
  with the kernel of `resnet_init_kernel` (the paper's "ResNet Init"): same
  parameters, same names, so variables move between the two forms unchanged.

  `conv` and `norm` are the modules of its convolutions and of BN_r and BN_t (see layers).
  """
  features: int
  strides: int = 1
  shortcut: str = 'projection'
  single_conv: bool = False
  conv: layers.ModuleDef = nn.Conv
  norm: layers.ModuleDef = layers.BatchNorm

  @nn.compact
  def __call__(self, r: jax.Array, t: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    shape = (3, 3, r.shape[-1], self.features)
    kernels = {name: self.param(name, layers.he_normal, shape, jnp.float32)
               for name in KERNEL_NAMES}
    conv = functools.partial(layers.conv_with, self.conv, strides=self.strides)
    identity = layers.is_identity(r, self.features, self.strides)
    if self.single_conv:
      kernel = resnet_init_kernel(**kernels, add_identity=identity)
      r_out, t_out = jnp.split(conv(jnp.concatenate([r, t], axis=-1), kernel), 2, axis=-1)
    else:
      r_out = conv(r, kernels['kernel_rr']) + conv(t, kernels['kernel_tr'])
      t_out = conv(r, kernels['kernel_rt']) + conv(t, kernels['kernel_tt'])
    if not (identity and self.single_conv):  # else it is inside the kernel already
      r_out += layers.shortcut(self.conv, r, self.features, self.strides, self.shortcut)
    norm = functools.partial(self.norm, use_running_average=not train, relu=True)
    return norm(name='bn_r')(r_out, mask=mask), norm(name='bn_t')(t_out, mask=mask)


class RiRBlock(nn.Module):
  """Two generalized residual blocks inside an outer shortcut on the residual stream.

  r_out = r2 + shortcut(r), (r2, t_out) = G2(G1(r, t)); the first block G1 carries
  the stride and width change, and the outer shortcut (identity, else a 1x1
  'projection' or zero padding) adds the block-input r to the block-output r,
  with no BN or ReLU after the sum. Without `outer_shortcut` the pair is just two
  generalized blocks in a row (the paper's "ResNet Init" network). `conv` and `norm`
  are the generalized blocks' (see layers).
  """
  features: int
  strides: int = 1
  shortcut: str = 'projection'
  single_conv: bool = False
  outer_shortcut: bool = True
  conv: layers.ModuleDef = nn.Conv
  norm: layers.ModuleDef = layers.BatchNorm

  @nn.compact
  def __call__(self, r: jax.Array, t: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    block = functools.partial(GeneralizedResidualBlock, self.features, shortcut=self.shortcut,
                              single_conv=self.single_conv, conv=self.conv, norm=self.norm)
    r_in = r
    r, t = block(strides=self.strides)(r, t, train=train, mask=mask)
    r, t = block()(r, t, train=train, mask=mask)
    if self.outer_shortcut:
      r += layers.shortcut(self.conv, r_in, self.features, self.strides, self.shortcut)
    return r, t


class PlainPairBlock(nn.Module):
  """RiRBlock with each generalized block replaced by one conv-BN-ReLU on one stream.

  x_out = L2(L1(x)) (+ shortcut(x) if `outer_shortcut`): the ResNet block that RiR
  generalizes (with the outer shortcut) or two layers of a plain CNN (without).
  L1 carries the stride and width change. `conv` and `norm` are the modules of its
  convolutions and batch norms (see layers).
  """
  features: int
  strides: int = 1
  shortcut: str = 'projection'
  outer_shortcut: bool = True
  conv: layers.ModuleDef = nn.Conv
  norm: layers.ModuleDef = layers.BatchNorm

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> jax.Array:
    def conv_bn_relu(y, strides):
      y = layers.conv(self.conv, self.features, 3, strides)(y)
      return self.norm(use_running_average=not train, relu=True)(y, mask=mask)

    y = conv_bn_relu(conv_bn_relu(x, self.strides), 1)
    if self.outer_shortcut:
      y += layers.shortcut(self.conv, x, self.features, self.strides, self.shortcut)
    return y


class RiR(nn.Module):
  """ResNet in ResNet for small images.

  Stem: per stream, 3x3 conv at `widths[0]` + BN + ReLU on the image. Then one stage
  per entry of `widths`, each of `blocks_per_stage` RiRBlocks (two generalized blocks
  each); the first block of every stage after the first has stride 2. Head: concat(r, t)
  then either 'dense' (global average pool, dense: the ResNet head) or 'conv_bn' (the
  paper's 1x1 conv to classes + BN, then global average pool).

  The defaults, widths (8, 16, 32) per stream with (2, 3, 3) blocks, are the paper's
  18-layer RiR (1 stem + 16 generalized blocks + 1 head) scaled to about 0.27M
  parameters, matched with ResNet-20.

  `block` and `outer_shortcut` give the paper's four rows on one layout (configs/paper.py):
  RiR ('generalized', True), ResNet Init ('generalized', False), ResNet ('plain', True)
  and CNN ('plain', False). A 'plain' layer is one conv-BN-ReLU on a single stream of
  twice the width: the generalized block without its residual stream, at the same
  number of weights per layer.

  Attributes:
    num_classes: number of logits.
    widths: channels per stream of each stage (the total is twice this).
    blocks_per_stage: RiRBlocks in each stage.
    shortcut: 'projection' (default) or 'zero_pad' where the shape changes.
    head: 'dense' or 'conv_bn'.
    single_conv: compute each generalized block as one convolution (ResNet Init).
    block: 'generalized' (two streams, Eq. 1) or 'plain' (one stream, conv-BN-ReLU).
    outer_shortcut: add each RiRBlock's input to its output on the residual stream.
    dtype: compute dtype; parameters stay float32.
    bn_momentum: batch-norm running-average momentum.
    bn_epsilon: batch-norm epsilon.
    conv: the convolutions' module (flax.linen.Conv's arguments; see layers).
    norm: the batch norms' module (layers.BatchNorm's arguments; see layers).
    stream_norm: the module of Eq. 1's BN_r and BN_t, whose inputs are sums of
      convolutions; `norm` if None.
  """
  num_classes: int
  widths: Sequence[int] = (8, 16, 32)
  blocks_per_stage: Sequence[int] = (2, 3, 3)
  shortcut: str = 'projection'
  head: str = 'dense'
  single_conv: bool = False
  block: str = 'generalized'
  outer_shortcut: bool = True
  dtype: layers.Dtype = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  conv: layers.ModuleDef = nn.Conv
  norm: layers.ModuleDef = layers.BatchNorm
  stream_norm: layers.ModuleDef | None = None

  def __post_init__(self):
    if len(self.widths) != len(self.blocks_per_stage):
      raise ValueError(f'widths {tuple(self.widths)} and blocks_per_stage '
                       f'{tuple(self.blocks_per_stage)} must have the same length')
    layers.check_choice('shortcut', self.shortcut, layers.SHORTCUTS)
    layers.check_choice('head', self.head, HEADS)
    layers.check_choice('block', self.block, BLOCKS)
    if self.block == 'plain' and self.single_conv:
      raise ValueError("single_conv needs block='generalized': a plain layer has one conv already")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> jax.Array:
    conv, norm = layers.bound(self)
    if self.block == 'plain':
      x = self._plain_body(x, conv, norm, train, mask)
    else:
      x = self._generalized_body(x, conv, norm, train, mask)
    if self.head == 'dense':
      return layers.classifier_logits(x, self.num_classes, self.dtype)
    x = layers.conv(conv, self.num_classes, 1, name='head_conv')(x)
    x = norm(use_running_average=not train, name='head_bn')(x, mask=mask)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)

  def _stages(self):
    """(width, strides) of every RiRBlock in order."""
    for stage, (width, blocks) in enumerate(zip(self.widths, self.blocks_per_stage)):
      for index in range(blocks):
        yield width, 2 if stage > 0 and index == 0 else 1

  def _generalized_body(self, x, conv, norm, train, mask):
    def stem(stream):
      y = layers.conv(conv, self.widths[0], 3, name=f'stem_conv_{stream}')(x)
      return norm(use_running_average=not train, relu=True,
                  name=f'stem_bn_{stream}')(y, mask=mask)

    stream_norm = norm if self.stream_norm is None else layers.bound_norm(self, self.stream_norm)
    r, t = stem('r'), stem('t')
    for width, strides in self._stages():
      r, t = RiRBlock(width, strides=strides, shortcut=self.shortcut,
                      single_conv=self.single_conv, outer_shortcut=self.outer_shortcut,
                      conv=conv, norm=stream_norm)(r, t, train=train, mask=mask)
    return jnp.concatenate([r, t], axis=-1)

  def _plain_body(self, x, conv, norm, train, mask):
    x = layers.conv(conv, 2 * self.widths[0], 3, name='stem_conv')(x)
    x = norm(use_running_average=not train, relu=True, name='stem_bn')(x, mask=mask)
    for width, strides in self._stages():
      x = PlainPairBlock(2 * width, strides=strides, shortcut=self.shortcut,
                         outer_shortcut=self.outer_shortcut, conv=conv,
                         norm=norm)(x, train=train, mask=mask)
    return x


# Same architecture, each generalized block run as one convolution over concat(r, t).
ResNetInit = functools.partial(RiR, single_conv=True)

# The paper's CIFAR model, "18-layer + wide": stem at 48 per stream; 2 RiRBlocks at 48
# (32x32), 1 + 2 at 96 (16x16), 1 + 2 at 192 (8x8); 1x1 conv + BN head. ~9.5M params.
RiRPaper = functools.partial(RiR, widths=(48, 96, 192), blocks_per_stage=(2, 3, 3),
                             head='conv_bn')
