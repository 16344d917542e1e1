"""Differences between rows over seeds: Welch's t interval and the sentence it supports."""
from __future__ import annotations

import itertools
import math
import statistics

from scipy import stats


def welch_interval(a: list[float], b: list[float], confidence: float = 0.95) -> dict:
  """mean(a) - mean(b) with Welch's t confidence interval and two-sided p-value.

  Welch's test does not assume equal variances, the honest choice for models whose
  seed-to-seed spread differs. With fewer than two values on a side, or no spread at
  all, there is no interval: `low`, `high` and `p` are None.
  """
  diff = statistics.mean(a) - statistics.mean(b)
  result = {"difference": diff, "low": None, "high": None, "p": None, "df": None}
  if len(a) < 2 or len(b) < 2:
    return result
  va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
  if va + vb == 0:
    return result
  se = math.sqrt(va + vb)
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  half = stats.t.ppf(0.5 + confidence / 2, df) * se
  p = 2 * stats.t.sf(abs(diff) / se, df)
  return {"difference": diff, "low": float(diff - half), "high": float(diff + half), "p": float(p),
          "df": df}


def pairwise(accuracies: dict[str, list[float]], confidence: float = 0.95) -> list[dict]:
  """Every pair of rows, in the order given: first minus second."""
  return [{"first": x, "second": y, **welch_interval(accuracies[x], accuracies[y], confidence)}
          for x, y in itertools.combinations(accuracies, 2)]


def sentence(comparison: dict, unit: float = 100.0) -> str:
  """One plain sentence: which row is ahead, by how much, and whether that is significant."""
  first, second, diff = comparison["first"], comparison["second"], comparison["difference"]
  ahead, behind = (first, second) if diff >= 0 else (second, first)
  points = f"{abs(diff) * unit:.2f} points"
  if comparison["low"] is None:
    return f"{ahead} is {points} ahead of {behind}; too few seeds for an interval."
  interval = f"95% CI {comparison['low'] * unit:+.2f} to {comparison['high'] * unit:+.2f}"
  significant = comparison["low"] > 0 or comparison["high"] < 0
  verdict = "significant" if significant else "not significant (the interval spans 0)"
  p = "p < 0.001" if comparison["p"] < 0.001 else f"p = {comparison['p']:.3f}"
  return f"{ahead} is {points} ahead of {behind} ({first} - {second}: {interval}, {p}): {verdict}."
