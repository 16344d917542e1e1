"""Where numbers go: metrics.jsonl, TensorBoard event files, and the terminal."""
from __future__ import annotations

import json
import logging
import math
import sys
import time

import tqdm

from rir_jax import storage

log = logging.getLogger(__name__)


def _plain(value):
  """JSON-safe Python scalars (NaN/inf become strings JSON readers accept)."""
  value = float(value) if not isinstance(value, (int, str)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricsWriter:
  """Appends one JSON object per line (always with `step`) and mirrors it to TensorBoard.

  Only the main process writes: pass `enabled=False` elsewhere.
  """

  def __init__(self, workdir: storage.Path, *, enabled: bool):
    self._enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # Writes event files without TensorFlow.
    self._jsonl = storage.open_log(workdir / "metrics.jsonl")
    self._tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self._enabled:
      return
    line = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(line) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      if isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(name, value, step)

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tb.close()


def read_metrics(path: storage.Path | str) -> list[dict]:
  """The lines of a metrics.jsonl file (local or gs://), as dicts."""
  with storage.as_path(path).open(encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """A tqdm bar on a terminal; plain log lines (one per log interval) otherwise."""

  def __init__(self, *, total_steps: int, initial_step: int, steps_per_epoch: int,
               enabled: bool):
    self._steps_per_epoch = steps_per_epoch
    self._enabled = enabled
    self._bar = None
    if enabled and sys.stderr.isatty():
      self._bar = tqdm.tqdm(total=total_steps, initial=initial_step, unit="step",
                            dynamic_ncols=True)
    self._start = time.time()
    self._initial_step = initial_step
    self._total = total_steps

  def update(self, step: int, loss: float, images_per_sec: float) -> None:
    if not self._enabled:
      return
    epoch = step / self._steps_per_epoch
    if self._bar is not None:
      self._bar.set_postfix(epoch=f"{epoch:.2f}", loss=f"{loss:.4f}",
                            img_s=f"{images_per_sec:.0f}", refresh=False)
      self._bar.update(step - self._bar.n)
      return
    done = step - self._initial_step
    elapsed = time.time() - self._start
    eta = elapsed / done * (self._total - step) if done else float("nan")
    log.info("step %d/%d epoch %.2f loss %.4f %.0f img/s eta %.0fs",
             step, self._total, epoch, loss, images_per_sec, eta)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
