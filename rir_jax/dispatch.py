"""Which steps run together in one dispatch (`config.steps_per_dispatch`).

Several steps per dispatch (one `lax.scan` over k stacked batches, rir_jax.train.train_steps)
spare the host a launch and a wait per step: what bounds a short step on an accelerator.
Logging, evaluating, checkpointing and the end of the run happen between dispatches, so no
dispatch runs past one of them: up to the next such step the run goes k steps at a time,
and the steps left before it (fewer than k) one at a time. Two programs at most, and the
plan from any step depends on that step alone, so a run stopped and resumed anywhere
dispatches exactly as an uninterrupted one.
"""
from __future__ import annotations

from typing import Iterator


def chunks(start: int, end: int, steps_per_dispatch: int,
           every: tuple[int, ...]) -> Iterator[tuple[int, int]]:
  """(first step, number of steps) for each dispatch of steps [start, end).

  `every`: the intervals whose multiples must end a dispatch (log, eval, checkpoint).
  """
  step = start
  while step < end:
    stop = min([end] + [(step // n + 1) * n for n in every])
    length = steps_per_dispatch if stop - step >= steps_per_dispatch else 1
    yield step, length
    step += length

