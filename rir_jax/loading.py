"""A trained model from a workdir or an export file: `rir_jax.load` and the commands' loader.

    model, variables, preprocess = rir_jax.load("runs/rir1", step="best")
    logits = model.apply(variables, preprocess(uint8_nhwc_images), train=False)
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import Any

import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from rir_jax import best as best_lib, exported, library_noise, model_card, storage
from rir_jax.errors import reason
from rir_jax.preprocess import Preprocess

log = logging.getLogger(__name__)

STEP_NAMES = ("best", "last")


class LoadError(ValueError):
  """Nothing loadable where the user pointed; the message is one line saying why."""


@dataclasses.dataclass(frozen=True)
class Trained:
  """A loaded model with what it came from."""
  model: nn.Module
  variables: dict[str, Any]
  preprocess: Preprocess
  card: dict
  step: int
  source: pathlib.Path


def parse_step(text: str | int) -> str | int:
  """'best', 'last' or a step number, from a command line or a caller."""
  if isinstance(text, int) or text in STEP_NAMES:
    return text
  if str(text).isdigit():
    return int(text)
  raise LoadError(f"--step={text} is not a step; use best, last or a step number")


def load(path, step: str | int = "best", *, kernels: str | None = None,
         conv_impl: str | None = None):
  """(model, variables, preprocess) of a run's workdir or an exported file.

  Args:
    path: a training workdir, or a file written by `python -m rir_jax.export`.
    step: for a workdir, "best" (the best validation checkpoint; the last one when the
      run had no validation split), "last" or a step number. An export holds one step.
    kernels: the back end the model runs on ("xla", "cpu_library", "auto"; see
      rir_jax.kernels.select); default: the run's.
    conv_impl: `kernels`' old name, deprecated.

  Returns:
    The flax module, its variables {"params", "batch_stats"}, and the Preprocess that
    turns uint8 NHWC images into its input.
  """
  if conv_impl is not None:
    log.warning("load(conv_impl=...) is deprecated: use kernels=...")
    kernels = kernels or conv_impl
  trained = load_trained(path, step, kernels=kernels)
  return trained.model, trained.variables, trained.preprocess


def load_trained(path, step: str | int = "best", *, kernels: str | None = None) -> Trained:
  try:
    path = storage.user_path(os.fspath(path))
  except storage.UnsupportedURL as error:
    raise LoadError(str(error)) from None
  step = parse_step(step)
  if path.is_file():
    try:
      card, variables = exported.read(path)
    except exported.ExportError as error:
      raise LoadError(str(error)) from error
    if step not in ("best", card["step"]):
      raise LoadError(f"{path} holds step {card['step']} only; drop --step or use best")
    found = card["step"]
  elif path.is_dir():
    card = _card(path)
    found, manager = _checkpoint_of(path, step)
    variables = _restore_variables(manager, found)
  else:
    raise LoadError(f"{path} does not exist; give a training workdir or an exported file")
  try:
    model_card.check(card)
    model = model_card.build_model(card, kernels=kernels)
    model_card.check_variables(model, card, variables)
  except model_card.CardError as error:
    where = path / model_card.MODEL_FILE if path.is_dir() else path
    raise LoadError(f"{where}: {error}") from error
  return Trained(model=model, variables=variables, preprocess=model_card.preprocess(card),
                 card=card, step=found, source=path)


def _card(workdir: pathlib.Path) -> dict:
  rewrite = "re-run its training command once (it resumes at its end) to write it"
  try:
    return model_card.read(workdir)
  except FileNotFoundError as error:
    raise LoadError(f"{workdir} has no {model_card.MODEL_FILE}: not a training workdir, or "
                    f"one trained before it was written; {rewrite}") from error
  except storage.DamagedFile as error:
    raise LoadError(f"{error}; copy it again from the run, or {rewrite}") from error


def _checkpoint_of(workdir: pathlib.Path, step: str | int) -> tuple[int, ocp.CheckpointManager]:
  """The step `step` names, and the Orbax manager that holds it."""
  folder = workdir / "checkpoints"
  if not folder.is_dir():
    raise LoadError(f"{workdir} has no checkpoints/ folder: not a training workdir")
  newest = ocp.CheckpointManager(storage.absolute(folder), options=ocp.CheckpointManagerOptions(
      create=False, enable_async_checkpointing=False, cleanup_tmp_directories=False),
      item_handlers=ocp.StandardCheckpointHandler())
  best = (best_lib.manager(folder, create=False)
          if (folder / best_lib.BEST_DIR).is_dir() else None)
  if step == "best" and best is not None and best.best_step() is not None:
    return best.best_step(), best
  if step in STEP_NAMES:
    if newest.latest_step() is None:
      raise LoadError(f"{folder} holds no checkpoint yet")
    return newest.latest_step(), newest
  for manager in (newest, best):
    if manager is not None and step in manager.all_steps():
      return step, manager
  kept = sorted({*newest.all_steps(), *(best.all_steps() if best else ())})
  raise LoadError(f"{folder} holds no checkpoint of step {step}; it holds steps "
                  f"{', '.join(map(str, kept)) or 'none'}")


def _restore_variables(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """params and batch_stats of a saved train state, on this process's first device."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  library_noise.quiet_abandoned_reads()
  try:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          manager.item_metadata(step))
    state = manager.restore(step, args=ocp.args.StandardRestore(target))
  except Exception as error:  # noqa: BLE001 - a damaged checkpoint fails in many ways
    others = [s for s in manager.all_steps() if s != step]
    hint = (f"; steps {', '.join(map(str, sorted(others)))} are kept too (--step=N)"
            if others else "")
    raise LoadError(f"the checkpoint of step {step} in {manager.directory} does not read "
                    f"back, damaged or partly copied ({reason(error)[:400]}){hint}") from error
  return {"params": state["params"], "batch_stats": state["batch_stats"]}
