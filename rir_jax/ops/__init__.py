"""Convolution back ends: XLA's own, or oneDNN's on CPU (see `onednn`)."""
from __future__ import annotations

import functools
import logging
from typing import Callable

import jax
from jax import lax

from rir_jax.ops import onednn

log = logging.getLogger(__name__)

IMPLS = ("xla", "onednn", "auto")


@functools.cache  # one choice, and one log line, per process
def conv_general_dilated_for(impl: str) -> Callable[..., jax.Array]:
  """A function with `lax.conv_general_dilated`'s signature that runs on `impl`.

  Args:
    impl: "xla" (`lax.conv_general_dilated` itself), "onednn" (RuntimeError if
      the library does not build or load) or "auto" (oneDNN where the default
      backend is CPU and the library loads, else XLA; logs which and why).

  Returns:
    The function, e.g. for `flax.linen.Conv(..., conv_general_dilated=...)`.
  """
  if impl not in IMPLS:
    raise ValueError(f"unknown conv impl {impl!r}; choose one of: {', '.join(IMPLS)}")
  if impl == "xla":
    return lax.conv_general_dilated
  backend = jax.default_backend()
  if impl == "auto" and backend != "cpu":
    log.info("conv impl auto: XLA, as the default backend is %s, not cpu", backend)
    return lax.conv_general_dilated
  available, reason = onednn.is_available()
  if available:
    if impl == "auto":
      log.info("conv impl auto: oneDNN, %s", reason)
    return onednn.conv_general_dilated
  if impl == "onednn":
    raise RuntimeError(f"conv impl 'onednn' is unavailable: {reason}")
  log.warning("conv impl auto: XLA, as oneDNN is unavailable: %s", reason)
  return lax.conv_general_dilated


def resolve(impl: str) -> str:
  """The implementation `impl` runs on in this process: "xla" or "onednn"."""
  return "onednn" if conv_general_dilated_for(impl) is onednn.conv_general_dilated else "xla"
