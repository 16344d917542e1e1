"""What every process of a multi-process run must share: one workdir and one config.

Process 0 writes the config, the logs and the checkpoints, and every process restores
from them. A workdir on each host's own disk (the same path, other folders) trains, but
its resume hangs: process 0 restores its newest step while the others, seeing none, start
from step 0. A process started with another config (a stale checkout, a flag left out)
trains silently with its own numbers, or hangs in a collective. So before the workdir is
claimed, process 0 leaves a file named by a fresh token there and tells the others the
token and its config through JAX's coordination service; each looks for the file in its
own workdir, compares the configs, and answers; every process stops with the same line
where one does not see the file or runs another config. Only each host's data paths may
differ.
"""
from __future__ import annotations

import json
import socket
import time
import uuid

import jax
import ml_collections
import orbax.checkpoint as ocp

from rir_jax import storage
from rir_jax import workdir as workdir_lib
from rir_jax.workdir import WorkdirError

_FIRST_KEY = "rir_jax_first_process"
_ANSWER_KEY = "rir_jax_answer_"
# How long a process looks for the file: a network file system may show a new file late.
_LOOK_S = 10.0


def check(workdir: storage.Path, config: ml_collections.ConfigDict, wait_s: int) -> None:
  """Raises WorkdirError, on every process, unless every process sees process 0's workdir
  and runs its config.

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
    first = {"token": uuid.uuid4().hex, "config": workdir_lib.config_json(config)}
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / _marker_name(first["token"])).write_text(
        f"written by process 0 on {socket.gethostname()}\n")
    client.key_value_set(_FIRST_KEY, json.dumps(first))
  else:
    first = json.loads(client.blocking_key_value_get(_FIRST_KEY, wait_s * 1000))
  marker = workdir / _marker_name(first["token"])
  client.key_value_set(f"{_ANSWER_KEY}{jax.process_index()}", json.dumps({
      "host": socket.gethostname(), "sees": _sees(marker),
      "differences": workdir_lib.process_differences(first["config"], config)}))
  answers = [json.loads(client.blocking_key_value_get(f"{_ANSWER_KEY}{i}", wait_s * 1000))
             for i in range(jax.process_count())]
  if jax.process_index() == 0:  # every process has looked: each answered after looking
    marker.unlink()
  message = _disagreement(workdir, answers)
  if message:
    if created:  # left as it was found
      workdir.rmdir()
    raise WorkdirError(message)


def _disagreement(workdir: storage.Path, answers: list[dict]) -> str | None:
  """The line every process stops with, or None where all agree."""
  blind = [f"process {i} on {a['host']}" for i, a in enumerate(answers) if not a["sees"]]
  if blind:
    return (f"--workdir={workdir} is not one folder for every process: {', '.join(blind)} "
            "cannot see what process 0 wrote there (a folder on each host's own disk?); give "
            "every process the same shared folder (a network file system, or gs://)")
  other = [(i, a) for i, a in enumerate(answers) if a["differences"]]
  if other:
    i, answer = other[0]
    return (f"process {i} on {answer['host']} runs another config than process 0 "
            f"({'; '.join(answer['differences'][:3])}); give every process the same command "
            "(only --config.data.data_dir and manual_dir may differ between hosts)")
  return None


def _marker_name(token: str) -> str:
  return f"shared-check-{token}"


def _sees(marker: storage.Path) -> bool:
  deadline = time.monotonic() + _LOOK_S
  while not marker.exists():
    if time.monotonic() > deadline:
      return False
    time.sleep(0.5)
  return True
