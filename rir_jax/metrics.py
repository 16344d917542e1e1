"""Where numbers go: metrics.jsonl, TensorBoard event files, and the terminal."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time

import tqdm
# The synchronous half of tensorboardX: event files without TensorFlow or a writer thread.
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2

from rir_jax import storage

log = logging.getLogger(__name__)


def _plain(value):
  """JSON-safe Python scalars (NaN/inf become strings JSON readers accept)."""
  value = float(value) if not isinstance(value, (int, str)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class WriterError(OSError):
  """metrics.jsonl or the TensorBoard file could not be written (full disk, say)."""


class MetricsWriter:
  """Appends one JSON object per line (always with `step`) and mirrors it to TensorBoard.

  Both files are written on the calling thread and flushed at every call: a full disk
  raises WriterError here, at once, where a background writer thread would die and
  leave the run blocked on its queue. Only the main process writes: pass
  `enabled=False` elsewhere.
  """

  def __init__(self, workdir: storage.Path, *, enabled: bool):
    self._enabled = enabled
    if not enabled:
      return
    self._path = workdir / "metrics.jsonl"
    with _writer_errors(workdir):
      self._jsonl = storage.open_log(self._path)  # on gs://, rewritten whole at each flush
      (workdir / "tensorboard").mkdir(parents=True, exist_ok=True)
      # Writes event files without TensorFlow (the synchronous part of tensorboardX; on
      # gs:// its record writer uploads the file at each flush).
      self._tb = EventsWriter(str(workdir / "tensorboard" / "events"))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self._enabled:
      return
    line = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
    with _writer_errors(self._path.parent):
      self._jsonl.write(json.dumps(line) + "\n")
      self._jsonl.flush()
      for name, value in scalars.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          self._tb.write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary.scalar(name, value)))
      self._tb.flush()

  def close(self) -> None:
    if self._enabled:
      with _writer_errors(self._path.parent):
        try:
          self._jsonl.close()
        finally:
          self._tb.close()


@contextlib.contextmanager
def _writer_errors(workdir: storage.Path):
  try:
    yield
  except OSError as error:
    raise WriterError(f"could not write metrics in {workdir} ({error.strerror or error})") \
        from error


def read_metrics(path: storage.Path | str) -> list[dict]:
  """The lines of a metrics.jsonl file (local or gs://), as dicts."""
  with storage.as_path(path).open(encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def read_metrics_leniently(path: storage.Path) -> tuple[list[dict], list[str]]:
  """The readable lines of a metrics.jsonl file, and a description of each unreadable one.

  A power cut or a full disk leaves a torn last line; a damaged disk or an editor,
  garbage anywhere. Neither may stop a run from resuming: such lines are skipped.
  """
  lines, problems = [], []
  with storage.as_path(path).open("rb") as f:
    raw = f.read().decode("utf-8", errors="replace").split("\n")
  last = max((i for i, text in enumerate(raw) if text.strip()), default=-1)
  for number, text in enumerate(raw, 1):
    if not text.strip():
      continue
    try:
      line = json.loads(text)
      if not (isinstance(line, dict) and isinstance(line.get("step"), int)):
        raise ValueError("not an object with a step")
      lines.append(line)
    except ValueError:
      torn = number - 1 == last
      problems.append(f"line {number} ({'cut short' if torn else 'not a metrics line'}: "
                      f"{text[:60]!r})")
  return lines, problems


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
