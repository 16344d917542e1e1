"""config.stop_at_accuracy: a run ends at its first eval that reaches a target accuracy.

The eval's own split decides: the validation split where one is held out (the test split
is then evaluated once, as at any end), else the test split.
"""
from __future__ import annotations

from typing import Callable


def reached(stop_at: float, scalars: dict[str, float]) -> bool:
  """Whether an eval's scalars reach the target (never, where `stop_at` is 0: off)."""
  accuracy = scalars.get("val/accuracy", scalars.get("eval/accuracy"))
  return 0 < stop_at <= accuracy


def ended_at(stop_at: float, step: int, eval_every: int,
             evaluate: Callable[[], dict[str, float]]) -> bool:
  """Whether a run resumed at `step` had ended there, its eval reaching the target.

  The restored state evaluates as it did then, so a re-run of a run that stopped this
  way finishes at once, as a re-run of any finished run does.
  """
  return 0 < stop_at and 0 < step and step % eval_every == 0 and reached(stop_at, evaluate())
