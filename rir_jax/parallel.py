"""Devices, the data mesh, and multi-host start-up.

One compiled step serves every machine: a 1-D mesh named `data` over all devices
(of all processes), the train state replicated and the batch split along it.
"""
from __future__ import annotations

import itertools

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
# How long a process waits at wait_for_peers for peers still at work (compiling, on a
# loaded host or a persistent-cache miss); a dead peer fails it sooner, at its heartbeat.
PEER_WAIT_S = 3600
_barriers = itertools.count()


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None, *, auto: bool = False,
                           timeout_s: int | None = None) -> None:
  """Joins a multi-process run: explicitly (loopback, GPU boxes) or auto-detected (TPU VMs).

  `timeout_s` bounds how long a process waits for peers to join, how long a silent peer
  counts as alive, and how long exit waits for the others (JAX's defaults when None:
  300, 100 and 300 s). Past it, the survivors of a dead peer abort instead of hanging.
  """
  timeouts = {} if timeout_s is None else dict(
      initialization_timeout=timeout_s, heartbeat_timeout_seconds=timeout_s,
      shutdown_timeout_seconds=timeout_s)
  if coordinator_address:
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id,
        # Binding to the coordinator's own address keeps loopback runs off other interfaces.
        coordinator_bind_address=coordinator_address if process_id == 0 else None, **timeouts)
  elif auto:
    jax.distributed.initialize(**timeouts)


def wait_for_peers(name: str) -> None:
  """Returns once every process has called it with the same `name` (in the same order).

  Waits on JAX's coordination service, not a collective: the first run of a program's
  CPU collective sets up its gloo context, whose key exchange gives up after 30 s, so a
  process that reaches it while a peer is still compiling failed the run (seen with one
  process compiling 30 s longer on a loaded host). Call it after compiling, before the
  first run. One process: returns at once.
  """
  if jax.process_count() == 1:
    return
  wait = ocp.multihost.get_barrier_sync_fn()
  wait(key=f"rir_jax_{next(_barriers)}_{name.replace(' ', '_')}", timeout_ms=PEER_WAIT_S * 1000)


def make_mesh(devices=None) -> Mesh:
  """The 1-D data mesh over `devices` (default: every device of every process)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over all devices, other axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def stacked_batches_sharded(mesh: Mesh) -> NamedSharding:
  """(num_batches, batch, ...) arrays: each batch split over all devices."""
  return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def global_batch_from_local(local: dict[str, np.ndarray], mesh: Mesh, *,
                            stacked: bool = False) -> dict[str, jax.Array]:
  """Assembles the global batch from this process's slice (every process calls this)."""
  sharding = stacked_batches_sharded(mesh) if stacked else batch_sharded(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, array)
          for name, array in local.items()}


def is_main_process() -> bool:
  return jax.process_index() == 0
