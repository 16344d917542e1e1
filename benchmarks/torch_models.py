"""PyTorch replicas of rir_jax's ResNet and RiR and of its training step, for the
throughput benchmark only.

Each module computes what its flax counterpart in rir_jax/models computes, in the
same order and with the same parameters (benchmarks/throughput.py asserts equal
counts): bias-free convs padded k // 2, batch norm with momentum 0.1 (flax's 0.9)
and epsilon 1e-5, He fan-out init, shortcuts as in rir_jax/models/layers.py.
Modules register their parameters in the order flax creates them, so the two
models' parameter lists pair up one to one (tests/test_throughput.py copies flax
variables in and compares outputs). Inputs are NCHW, ideally channels_last. One
difference, of no weight for speed: torch updates a running variance with the
unbiased batch variance, flax with the biased one.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rir_jax.data import augment

BN_MOMENTUM = 0.1  # torch's momentum weighs the new batch: 1 - flax's 0.9
BN_EPSILON = 1e-5
# torch.compile compiles on the first call, and the optimizer's step again on the
# second, once its momentum buffers exist.
COMPILE_STEPS = 2


def conv(in_channels: int, out_channels: int, kernel_size: int = 3,
         stride: int = 1) -> nn.Conv2d:
  """layers.conv: bias-free, padding k // 2, He normal (fan out) init."""
  layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                    padding=kernel_size // 2, bias=False)
  nn.init.kaiming_normal_(layer.weight, mode='fan_out', nonlinearity='relu')
  return layer


def batch_norm(channels: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


def zero_pad(x: torch.Tensor, features: int, stride: int) -> torch.Tensor:
  """layers.zero_pad: subsample spatially, append zero channels at the end."""
  x = x[:, :, ::stride, ::stride]
  return F.pad(x, (0, 0, 0, 0, 0, features - x.shape[1]))


class Shortcut(nn.Module):
  """layers.shortcut: identity, zero padding, or a 1x1 conv 'projection'."""

  def __init__(self, in_channels: int, features: int, stride: int, kind: str):
    super().__init__()
    self.features, self.stride = features, stride
    self.identity = in_channels == features and stride == 1
    needs_conv = not self.identity and kind == 'projection'
    self.projection = conv(in_channels, features, 1, stride) if needs_conv else None

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.identity:
      return x
    if self.projection is None:
      return zero_pad(x, self.features, self.stride)
    return self.projection(x)


class PreActBlock(nn.Module):
  """resnet.PreActBlock: x + conv(relu(BN(conv(relu(BN(x)))))).

  A projection reads the pre-activated input, zero padding the raw one.
  """

  def __init__(self, in_channels: int, features: int, stride: int, shortcut: str):
    super().__init__()
    # Registered in flax's creation order, so parameters pair up one to one.
    self.bn1 = batch_norm(in_channels)
    self.shortcut = Shortcut(in_channels, features, stride, shortcut)
    self.conv1 = conv(in_channels, features, 3, stride)
    self.bn2 = batch_norm(features)
    self.conv2 = conv(features, features)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(x))
    residual = self.shortcut(y if self.shortcut.projection is not None else x)
    y = self.conv2(F.relu(self.bn2(self.conv1(y))))
    return y + residual


class ResNet(nn.Module):
  """resnet.ResNet: pre-activation ResNet-(6n+2); depth 20 by default."""

  def __init__(self, num_classes: int, depth: int = 20, width: int = 1,
               shortcut: str = 'zero_pad'):
    super().__init__()
    blocks_per_stage = (depth - 2) // 6
    channels = 16 * width
    self.stem = conv(3, channels)
    blocks = []
    for stage, multiplier in enumerate((1, 2, 4)):
      for index in range(blocks_per_stage):
        stride = 2 if stage > 0 and index == 0 else 1
        blocks.append(PreActBlock(channels, 16 * width * multiplier, stride, shortcut))
        channels = 16 * width * multiplier
    self.blocks = nn.Sequential(*blocks)
    self.bn = batch_norm(channels)
    self.head = nn.Linear(channels, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.bn(self.blocks(self.stem(x))))
    return self.head(x.mean(dim=(2, 3)))


class GeneralizedResidualBlock(nn.Module):
  """rir.GeneralizedResidualBlock in its default four-conv form (single_conv=False)."""

  def __init__(self, in_channels: int, features: int, stride: int, shortcut: str):
    super().__init__()
    self.rr, self.tr, self.rt, self.tt = (conv(in_channels, features, 3, stride)
                                          for _ in range(4))
    self.shortcut = Shortcut(in_channels, features, stride, shortcut)
    self.bn_r, self.bn_t = batch_norm(features), batch_norm(features)

  def forward(self, r: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r_out = self.rr(r) + self.tr(t) + self.shortcut(r)
    t_out = self.rt(r) + self.tt(t)
    return F.relu(self.bn_r(r_out)), F.relu(self.bn_t(t_out))


class RiRBlock(nn.Module):
  """rir.RiRBlock: two generalized blocks inside an outer shortcut on r."""

  def __init__(self, in_channels: int, features: int, stride: int, shortcut: str):
    super().__init__()
    self.first = GeneralizedResidualBlock(in_channels, features, stride, shortcut)
    self.second = GeneralizedResidualBlock(features, features, 1, shortcut)
    self.shortcut = Shortcut(in_channels, features, stride, shortcut)

  def forward(self, r: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r_out, t = self.second(*self.first(r, t))
    return r_out + self.shortcut(r), t


class RiR(nn.Module):
  """rir.RiR: per-stream stems, RiRBlock stages, a 'dense' or 'conv_bn' head."""

  def __init__(self, num_classes: int, widths: Sequence[int] = (8, 16, 32),
               blocks_per_stage: Sequence[int] = (2, 3, 3),
               shortcut: str = 'projection', head: str = 'dense'):
    super().__init__()
    self.stem_r = nn.Sequential(conv(3, widths[0]), batch_norm(widths[0]), nn.ReLU())
    self.stem_t = nn.Sequential(conv(3, widths[0]), batch_norm(widths[0]), nn.ReLU())
    blocks, channels = [], widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks_per_stage)):
      for index in range(count):
        stride = 2 if stage > 0 and index == 0 else 1
        blocks.append(RiRBlock(channels, width, stride, shortcut))
        channels = width
    self.blocks = nn.ModuleList(blocks)
    self.head_kind = head
    if head == 'dense':
      self.head = nn.Linear(2 * channels, num_classes)
    else:
      self.head = nn.Sequential(conv(2 * channels, num_classes, 1), batch_norm(num_classes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    r, t = self.stem_r(x), self.stem_t(x)
    for block in self.blocks:
      r, t = block(r, t)
    x = torch.cat([r, t], dim=1)
    if self.head_kind == 'dense':
      return self.head(x.mean(dim=(2, 3)))
    return self.head(x).mean(dim=(2, 3))


_MODELS = {
    'resnet': ResNet,
    'rir': RiR,
    # rir.RiRPaper: the paper's 9.5M-parameter CIFAR model.
    'rir_paper': lambda num_classes, **kw: RiR(
        num_classes, **{'widths': (48, 96, 192), 'head': 'conv_bn', **kw}),
}
MODEL_NAMES = tuple(_MODELS)


def get_model(name: str, *, num_classes: int, **kwargs) -> nn.Module:
  """The replica of rir_jax.models.get_model(name, ...); kwargs as there."""
  if name not in _MODELS:
    raise ValueError(f"no PyTorch replica of {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
  return _MODELS[name](num_classes, **kwargs)


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


class TrainStep:
  """The replica of config.model, trained the way rir_jax.train.train_step trains.

  Same work per call: crop+flip augmentation and normalisation of the uint8 batch,
  forward (bfloat16: torch.autocast), cross-entropy, backward, SGD with momentum and
  L2 weight decay on kernels, at the config's batch size, learning rate and seed.
  `compiled` runs all but the augmentation through torch.compile: the
  normalisation, forward and loss (their backward compiled with them), and the
  optimizer's update. The augmentation stays eager: it draws from a torch.Generator,
  which torch.compile cannot trace.
  """

  def __init__(self, config, dataset, device: str, compiled: bool = False):
    if dataset.augmentation != 'crop_flip':
      raise ValueError(f'the PyTorch step only replicates crop_flip, not {dataset.augmentation}')
    self.device = torch.device(device)
    # XLA's CPU runtime flushes denormals to zero; without this torch could be
    # slowed by them for reasons that have nothing to do with either framework.
    torch.set_flush_denormal(True)
    kwargs = {k: v for k, v in config.model.items() if k != 'name'}
    model = get_model(config.model.name, num_classes=dataset.num_classes, **kwargs)
    self.model = model.to(self.device, memory_format=torch.channels_last).train()
    self.params = count_params(model)
    opt = config.optimizer
    # rir_jax.optim.decay_mask: weight decay on kernels only.
    groups = [{'params': [p for p in model.parameters() if p.ndim > 1]},
              {'params': [p for p in model.parameters() if p.ndim <= 1], 'weight_decay': 0.0}]
    self.optimizer = torch.optim.SGD(groups, lr=opt.learning_rate, momentum=opt.momentum,
                                     weight_decay=opt.weight_decay)
    n = config.batch_size
    self.images = torch.from_numpy(dataset.train_images[:n]).to(self.device)
    self.labels = torch.from_numpy(dataset.train_labels[:n]).long().to(self.device)
    self.mean = torch.tensor(dataset.mean, device=self.device)
    self.std = torch.tensor(dataset.std, device=self.device)
    self.bfloat16 = config.dtype == 'bfloat16'
    self.generator = torch.Generator(self.device).manual_seed(config.seed)
    self._forward, self._update = self._forward_loss, self.optimizer.step
    if compiled:
      # A fresh start: compiled code of earlier replicas would count against
      # torch.compile's limit of recompiles for one function.
      torch._dynamo.reset()
      self._forward = torch.compile(self._forward_loss)
      self._update = torch.compile(lambda: self.optimizer.step())

  def _augment(self) -> torch.Tensor:
    """augment.augment(..., 'crop_flip') on the NHWC uint8 batch, vectorised."""
    n, h, w, _ = self.images.shape
    p = augment.CROP_PADDING
    padded = F.pad(self.images, (0, 0, p, p, p, p))
    top, left = torch.randint(0, 2 * p + 1, (2, n, 1), generator=self.generator,
                              device=self.device)
    rows = top + torch.arange(h, device=self.device)
    cols = left + torch.arange(w, device=self.device)
    flip = torch.rand(n, 1, generator=self.generator, device=self.device) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    index = torch.arange(n, device=self.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]]

  def _forward_loss(self, images: torch.Tensor) -> dict:
    images = (images.float() / 255.0 - self.mean) / self.std
    with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bfloat16):
      logits = self.model(images.permute(0, 3, 1, 2))  # NHWC memory: channels_last
    return {'loss': F.cross_entropy(logits.float(), self.labels),
            'accuracy': (logits.argmax(-1) == self.labels).float().mean()}

  def step(self) -> dict:
    self.optimizer.zero_grad(set_to_none=True)
    step_metrics = self._forward(self._augment())
    step_metrics['loss'].backward()
    self._update()
    if self.device.type == 'cuda':
      torch.cuda.synchronize()
    return step_metrics

  def compile(self) -> float:
    """Runs the steps in which torch.compile compiles; their seconds, so that timed
    steps exclude them as they exclude JAX's compile."""
    start = time.perf_counter()
    for _ in range(COMPILE_STEPS):
      self.step()
    return time.perf_counter() - start
