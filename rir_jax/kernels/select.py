"""Convolution back ends: XLA's own, or oneDNN's on CPU (see `conv`)."""
from __future__ import annotations

import functools
import logging
from typing import Callable

import jax
from jax import lax

from rir_jax.kernels import conv

log = logging.getLogger(__name__)

IMPLS = ("xla", "onednn", "auto")


def onednn_usable() -> tuple[bool, str]:
  """Whether oneDNN's convolutions can run in this process, and why (or why not)."""
  backend = jax.default_backend()
  if backend != "cpu":  # the FFI targets are registered for the CPU platform only
    return False, f"the default backend is {backend}, and oneDNN runs on CPUs only"
  return conv.is_available()


@functools.cache  # one choice, and one log line, per process
def conv_general_dilated_for(impl: str) -> Callable[..., jax.Array]:
  """A function with `lax.conv_general_dilated`'s signature that runs on `impl`.

  Args:
    impl: "xla" (`lax.conv_general_dilated` itself), "onednn" (RuntimeError
      where it cannot run, see `onednn_usable`) or "auto" (oneDNN where it can
      run, else XLA; logs which and why).

  Returns:
    The function, e.g. for `flax.linen.Conv(..., conv_general_dilated=...)`.
  """
  if impl not in IMPLS:
    raise ValueError(f"unknown conv impl {impl!r}; choose one of: {', '.join(IMPLS)}")
  if impl == "xla":
    return lax.conv_general_dilated
  usable, reason = onednn_usable()
  if usable:
    if impl == "auto":
      log.info("conv impl auto: oneDNN, %s", reason)
    return conv.conv_general_dilated
  if impl == "onednn":
    raise RuntimeError(f"conv impl 'onednn' is unavailable: {reason}")
  log.info("conv impl auto: XLA, as %s", reason)
  return lax.conv_general_dilated


def resolve(impl: str) -> str:
  """The implementation `impl` runs on in this process: "xla" or "onednn"."""
  return "onednn" if conv_general_dilated_for(impl) is conv.conv_general_dilated else "xla"
