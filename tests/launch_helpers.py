"""Shared by the fault and multi-process tests: a tiny config, launch.py commands, checkpoints."""
from __future__ import annotations

import os
import pathlib
import runpy
import socket
import subprocess
import sys

import jax
import orbax.checkpoint as ocp

from rir_jax import metrics, storage

REPO = pathlib.Path(__file__).resolve().parent.parent

# A config file, not --config.model.* flags: the experiment configs' model dicts hold only
# `name`, and flags cannot add keys. Checkpoints every 2 steps and evals every 4, so a fault
# at a random moment lands in a step, a save or an eval alike.
TINY_CONFIG = '''\
"""A tiny CNN on synthetic images for fault tests: 12 steps, frequent checkpoints."""
import ml_collections

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model = ml_collections.ConfigDict(
      {"name": "cnn", "widths": (8, 16), "convs_per_stage": 1})
  config.data.name = "synthetic"
  config.batch_size = 16
  config.eval_batch_size = 128
  config.num_train_steps = 12
  config.schedule.name = "constant"
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 2
  return config
'''


def write_tiny_config(folder: pathlib.Path) -> pathlib.Path:
  path = folder / "tiny.py"
  path.write_text(TINY_CONFIG)
  return path


def tiny_config(config_file: pathlib.Path, **overrides):
  """The tiny config, for in-process runs: 6 steps unless `overrides` say otherwise."""
  config = runpy.run_path(str(config_file))["get_config"]()
  config.num_train_steps = 6
  config.update(overrides)
  return config


def launch_command(config_file: pathlib.Path, workdir: pathlib.Path, *flags: str) -> list[str]:
  """launch.py on the tiny config; `--jax_cache_dir=` so the session's shared cache is used."""
  return [sys.executable, str(REPO / "launch.py"), f"--config={config_file}",
          f"--workdir={workdir}", "--jax_cache_dir=", *flags]


def start(command: list[str], log: pathlib.Path, **env: str) -> subprocess.Popen:
  """Starts `command` from the repository root, stdout and stderr into `log`.

  In a process group of its own, so that os.killpg(proc.pid, ...) reaches a command run
  under `timeout` and nothing else.
  """
  with open(log, "w") as out:  # the child keeps its own copy of the descriptor
    return subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def truncate_largest_array_file(step_folder: pathlib.Path, size: int = 100) -> None:
  """What a copy cut short leaves: the biggest of a step's array files, its head only."""
  largest = max((p for p in step_folder.rglob("*") if p.is_file() and p.parent.name == "d"),
                key=lambda p: p.stat().st_size)
  os.truncate(largest, size)


def read_checkpoint(workdir: storage.Path, step: int) -> dict:
  """The saved train state at `step` as numpy arrays, whatever device layout wrote it."""
  manager = ocp.CheckpointManager(storage.absolute(workdir / "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(create=False),
                                  item_handlers=ocp.StandardCheckpointHandler())
  try:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          manager.item_metadata(step))
    return jax.device_get(manager.restore(step, args=ocp.args.StandardRestore(target)))
  finally:
    manager.close()


def max_abs_difference(a: dict, b: dict) -> float:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return max(float(abs(x.astype("float64") - y.astype("float64")).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def result_lines(workdir: pathlib.Path) -> tuple[list, list]:
  """(train, eval) results in metrics.jsonl, without timings (which differ run to run)."""
  lines = metrics.read_metrics(workdir / "metrics.jsonl")
  train = [(l["step"], l["train/loss"], l["train/accuracy"]) for l in lines if "train/loss" in l]
  evals = [(l["step"], l["eval/loss"], l["eval/accuracy"], l["eval/examples"])
           for l in lines if "eval/loss" in l]
  return train, evals


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]
