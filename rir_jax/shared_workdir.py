"""Every process of a multi-process run must see one workdir: a shared disk or a bucket.

Process 0 writes the config, the logs and the checkpoints, and every process restores
from them. A workdir on each host's own disk (the same path, other folders) trains, but
its resume hangs: process 0 restores its newest step while the others, seeing none, start
from step 0. So before the workdir is claimed, process 0 leaves a file named by a fresh
token there and tells the others the token through JAX's coordination service; each looks
for that file in its own workdir and says whether it sees it, and every process stops
with the same line where one does not.
"""
from __future__ import annotations

import socket
import time
import uuid

import jax
import orbax.checkpoint as ocp

from rir_jax import storage
from rir_jax.workdir import WorkdirError

_TOKEN_KEY = "rir_jax_workdir_token"
_SEEN_KEY = "rir_jax_workdir_seen_"
# How long a process looks for the file: a network file system may show a new file late.
_LOOK_S = 10.0


def check(workdir: storage.Path, wait_s: int) -> None:
  """Raises WorkdirError, on every process, unless every process sees process 0's workdir.

  `wait_s` bounds the wait for peers still on their way here (loading data, checking
  the model). One process: returns at once.
  """
  if jax.process_count() == 1:
    return
  client = ocp.multihost.get_jax_distributed_client()
  # A local folder made here goes again where the check fails (gs:// has no folders).
  created = (jax.process_index() == 0 and not storage.is_remote(workdir)
             and not workdir.exists())
  if jax.process_index() == 0:
    token = uuid.uuid4().hex
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / _marker_name(token)).write_text(f"written by process 0 on {socket.gethostname()}\n")
    client.key_value_set(_TOKEN_KEY, token)
  else:
    token = client.blocking_key_value_get(_TOKEN_KEY, wait_s * 1000)
  marker = workdir / _marker_name(token)
  client.key_value_set(f"{_SEEN_KEY}{jax.process_index()}",
                       f"{int(_sees(marker))} {socket.gethostname()}")
  answers = [client.blocking_key_value_get(f"{_SEEN_KEY}{i}", wait_s * 1000)
             for i in range(jax.process_count())]
  if jax.process_index() == 0:  # every process has looked: each answered after looking
    marker.unlink()
  blind = [f"process {i} on {answer.split(' ', 1)[1]}"
           for i, answer in enumerate(answers) if answer.startswith("0")]
  if blind:
    if created:  # left as it was found
      workdir.rmdir()
    raise WorkdirError(
        f"--workdir={workdir} is not one folder for every process: {', '.join(blind)} "
        f"cannot see what process 0 wrote there (a folder on each host's own disk?); give "
        "every process the same shared folder (a network file system, or gs://)")


def _marker_name(token: str) -> str:
  return f"shared-check-{token}"


def _sees(marker: storage.Path) -> bool:
  deadline = time.monotonic() + _LOOK_S
  while not marker.exists():
    if time.monotonic() > deadline:
      return False
    time.sleep(0.5)
  return True
