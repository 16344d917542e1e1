"""What the FFI kernels need to run inside a batch-sharded or vmapped jit.

An FFI call is opaque to XLA's partitioner, which would gather its operands onto
every device; each kernel therefore comes with a `custom_partitioning` rule that
keeps the batch split (the helpers here), and, since custom_partitioning has no
batching rule, a vmap rule that runs it once per mapped element.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import jax
import numpy as np
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding

MeshAxes = Any  # a mesh axis name, a tuple of them, or None


def batch_axes(mesh, arg_shape) -> MeshAxes:
  """The mesh axes that split `arg_shape`'s leading (batch) dimension, or None.

  An uneven split counts as none: the padding rows of its last slice hold garbage,
  which a kernel summing over the batch would add in.
  """
  sharding = arg_shape.sharding
  batch = sharding.spec[0] if isinstance(sharding, NamedSharding) and sharding.spec else None
  axes = (batch,) if isinstance(batch, str) else batch or ()
  if arg_shape.shape[0] % np.prod([mesh.shape[a] for a in axes], dtype=int):
    return None
  return batch


def sum_across(partial: jax.Array, axes: MeshAxes) -> jax.Array:
  """The sum of each device's `partial` over the mesh `axes`, added in device order.

  Not `lax.psum`: an all-reduce adds in an order that depends on how the devices are
  spread over processes, and 2 processes x 2 devices then train (slightly) otherwise
  than 1 x 4 (tests/test_multihost.py). Gathering costs little for what the kernels
  sum: per-channel statistics and weight gradients.
  """
  return jnp.sum(lax.all_gather(partial, axes), axis=0)


def sharding_rule(rule: str, sums_over_batch: bool) -> tuple[str, dict]:
  """A Shardy rule for a kernel whose factor `b` (the batch) alone may stay split:
  `rule` (einsum-like, e.g. "b h w c, k c -> s c") and the keyword arguments that
  replicate every other factor and, if `sums_over_batch`, reduce over `b`."""
  # Shardy wants the factors in order of first appearance.
  others = tuple(dict.fromkeys(f for f in rule.replace(",", " ").split()
                               if f not in ("b", "->")))
  return rule, {"need_replication_factors": others,
                "reduction_factors": ("b",) if sums_over_batch else ()}


def automatic_sharding(*arrays: jax.Array) -> bool:
  """False under explicit sharding or shard_map, which type each result's sharding
  or variance: an FFI call's results carry neither."""
  return not any(m.explicit_axes or m.manual_axes
                 for m in (jax.typeof(a).sharding.mesh for a in arrays))


def named(name: str, fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """`fn`, lowered as a function of its own called `name` (letters, digits and _).

  A custom_partitioning call names its partitioning rule in the program only by an
  address, which the compilation cache's key leaves out (rir_jax/compile_cache.py);
  named after a kernel and its static arguments, its function still tells the program's
  calls apart there. XLA inlines it: it costs nothing at run time."""
  def call(*args):
    return fn(*args)
  call.__name__ = call.__qualname__ = re.sub(r"\W", "_", name)
  return jax.jit(call)


def sequential_vmap(fn: Callable[..., jax.Array], name: str) -> Callable[..., jax.Array]:
  """`fn` of arrays as a function called `name` (see `named`), under vmap run once per
  mapped element (as ffi_call's "sequential" vmap_method would)."""
  one_call = named(name, fn)

  @jax.custom_batching.custom_vmap
  def run(*args):
    return one_call(*args)

  @run.def_vmap
  def _rule(axis_size, in_batched, *args):
    del axis_size
    mapped = tuple(x for x, batched in zip(args, in_batched) if batched)

    def one(slices):
      rest = iter(slices)
      return run(*(next(rest) if batched else x for x, batched in zip(args, in_batched)))

    return lax.map(one, mapped), True

  return run
