"""Which back end the models run on, chosen once per process, and the modules they get.

A config's `kernels` names it: "xla" (XLA's own kernels), "cpu_library" (oneDNN's
convolutions and batch norm's sums on the project's C++ kernels; CPU only) or "auto"
(the library where it loads, else XLA). The math is the same on either, rounding aside.
The models know nothing of this: `build_model` gives them the `conv` and `norm` modules
of the chosen back end.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from rir_jax import models
from rir_jax.kernels import batch_norm, conv

log = logging.getLogger(__name__)

CHOICES = ("auto", "cpu_library", "xla")
# Values of `conv_impl`, as `kernels` was called before, by their new names.
OLD_NAMES = {"onednn": "cpu_library"}


@functools.cache  # one note per old name and process
def _note_renamed(old: str) -> None:
  log.warning("kernels %r is deprecated: it is now %r", old, OLD_NAMES[old])


def canonical(kernels: str) -> str:
  """`kernels` by its current name: conv_impl's "onednn" is "cpu_library" (with a note)."""
  if kernels in CHOICES:
    return kernels
  if kernels in OLD_NAMES:
    _note_renamed(kernels)
    return OLD_NAMES[kernels]
  raise ValueError(f"unknown kernels {kernels!r}; choose one of: {', '.join(CHOICES)}")


def cpu_library_usable() -> tuple[bool, str]:
  """Whether the CPU kernel library can run in this process, and why (or why not)."""
  backend = jax.default_backend()
  if backend != "cpu":  # the FFI targets are registered for the CPU platform only
    return False, f"the default backend is {backend}, and the CPU library runs on CPUs only"
  return conv.is_available()


@functools.cache  # one choice, and one log line, per process
def resolve(kernels: str) -> str:
  """The back end `kernels` runs on in this process: "cpu_library" or "xla".

  "cpu_library" where the library cannot run is a RuntimeError; "auto" logs its choice.
  """
  kernels = canonical(kernels)
  if kernels == "xla":
    return "xla"
  usable, reason = cpu_library_usable()
  if usable:
    if kernels == "auto":
      log.info("kernels auto: the CPU library, %s", reason)
    return "cpu_library"
  if kernels == "cpu_library":
    raise RuntimeError(f"kernels 'cpu_library' are unavailable: {reason}")
  log.info("kernels auto: XLA, as %s", reason)
  return "xla"


def conv_general_dilated_for(kernels: str) -> Callable[..., jax.Array]:
  """`lax.conv_general_dilated`, or the function of its signature that `kernels` runs."""
  if resolve(kernels) == "cpu_library":
    return conv.conv_general_dilated
  return lax.conv_general_dilated


@functools.cache  # the same modules for every model of the process: equal models
def _modules(resolved: str) -> dict[str, Any]:
  library = resolved == "cpu_library"
  return {
      "conv": functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated_for(resolved)),
      "norm": functools.partial(batch_norm.BatchNorm, kernel_sums=library),
      # RiR's streams are sums of convolutions (or slices of one's output) that XLA adds
      # inside the batch norms' own passes: the kernels' sums would need them written out
      # first, which costs more than it saves (benchmarks/PERFORMANCE.md, section 7).
      "stream_norm": functools.partial(batch_norm.BatchNorm, kernel_sums=False),
  }


def modules(kernels: str) -> dict[str, Any]:
  """The `conv`, `norm` and `stream_norm` modules the models run with on `kernels`."""
  return _modules(resolve(kernels))


def build_model(name: str, *, num_classes: int, kernels: str = "auto", dtype: Any = jnp.float32,
                **arguments: Any) -> nn.Module:
  """Model `name` (rir_jax.models.get_model's arguments) on the back end `kernels` runs."""
  accepted = models.model_arguments(name)
  given = {k: v for k, v in modules(kernels).items() if k in accepted}
  return models.get_model(name, num_classes=num_classes, dtype=dtype, **given, **arguments)
