"""Several steps per dispatch (config.steps_per_dispatch): the same run, fewer launches."""
import json
import signal

import jax
import numpy as np
import pytest

from launch_helpers import read_checkpoint, result_lines, tiny_config
from rir_jax import checks, dispatch, loop, stopping
from rir_jax.errors import ConfigError


@pytest.mark.parametrize("start,end,k,every", [
    (0, 13, 4, (6, 4)), (5, 13, 4, (6, 4)), (0, 100, 8, (50, 100, 500)), (0, 7, 3, (1000,)),
    (3, 40, 5, (7, 12, 9)), (0, 10, 1, (4,)),
])
def test_dispatches_cover_every_step_once_and_end_at_every_event(start, end, k, every):
  chunks = list(dispatch.chunks(start, end, k, every))
  steps = [s for first, n in chunks for s in range(first, first + n)]
  assert steps == list(range(start, end))
  assert {n for _, n in chunks} <= {1, k}  # two compiled programs at most
  ends = {first + n for first, n in chunks}
  events = {t for n in every for t in range(n, end, n) if t > start} | {end}
  assert events <= ends
  # Greedy: k at a time up to the next event, so a single step only within k of one.
  singles = [first for first, n in chunks if n == 1 and k > 1]
  assert all(any(first + m in events for m in range(1, k)) for first in singles)


def test_the_dispatches_from_any_boundary_are_those_of_the_whole_run():
  """What makes a stop and resume at any dispatch boundary dispatch as one run does."""
  whole = list(dispatch.chunks(0, 60, 4, (10, 25)))
  for i, (first, _) in enumerate(whole):
    assert list(dispatch.chunks(first, 60, 4, (10, 25))) == whole[i:]


class _StopAt:
  """Asks to stop at one dispatch boundary, as a SIGTERM read there would."""

  def __init__(self, boundary):
    self.boundary, self.seen = boundary, []

  def deferred(self):
    return stopping.NO_SIGNALS.deferred()

  def requested(self, boundary):
    self.seen.append(boundary)
    return signal.SIGTERM if boundary == self.boundary else None


@pytest.fixture(scope="module")
def one_at_a_time(tiny, synthetic, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("dispatch") / "k1"
  config = tiny_config(tiny, num_train_steps=11, log_every_steps=4, eval_every_steps=6,
                       checkpoint_every_steps=6, kernels="cpu_library")
  return workdir, loop.train_and_evaluate(config, workdir, synthetic)


@pytest.mark.usefixtures("cpu_kernel_library")
def test_several_steps_per_dispatch_train_the_same_bits(tiny, synthetic, one_at_a_time,
                                                       tmp_path):
  """11 steps, 3 at a time where no log, eval or checkpoint falls in between: on the CPU
  kernel library the scan computes the single steps' bits."""
  tmp_path = tmp_path / "run"
  reference, final = one_at_a_time
  config = tiny_config(tiny, num_train_steps=11, log_every_steps=4, eval_every_steps=6,
                       checkpoint_every_steps=6, kernels="cpu_library", steps_per_dispatch=3)
  assert loop.train_and_evaluate(config, tmp_path, synthetic) == final
  assert result_lines(tmp_path) == result_lines(reference)
  for step in (6, 11):
    a, b = read_checkpoint(tmp_path, step), read_checkpoint(reference, step)
    assert all((x == y).all() for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.usefixtures("cpu_kernel_library")
def test_a_stop_between_dispatches_resumes_to_the_same_bits(tiny, synthetic, one_at_a_time,
                                                           tmp_path):
  reference, final = one_at_a_time
  config = tiny_config(tiny, num_train_steps=11, log_every_steps=4, eval_every_steps=6,
                       checkpoint_every_steps=6, kernels="cpu_library", steps_per_dispatch=3)
  tmp_path = tmp_path / "run"
  stop = _StopAt(boundary=2)  # after steps 0-2 and 3: step 4, which is no checkpoint's
  with pytest.raises(stopping.Stopped) as stopped:
    loop.train_and_evaluate(config, tmp_path, synthetic, signals=stop)
  assert stopped.value.step == 4 and stop.seen == [1, 2]
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4"]
  assert loop.train_and_evaluate(config, tmp_path, synthetic) == final
  assert result_lines(tmp_path) == result_lines(reference)


def test_steps_per_dispatch_must_be_positive(tiny):
  with pytest.raises(ConfigError, match="steps_per_dispatch"):
    checks.validate(tiny_config(tiny, steps_per_dispatch=0), device_count=1, process_count=1)


def test_a_run_resumes_with_another_steps_per_dispatch():
  from rir_jax import workdir
  old = {"seed": 0, "steps_per_dispatch": 1}
  assert workdir._differences(old, {"seed": 0, "steps_per_dispatch": 8}) == []
  assert workdir._differences({"seed": 0}, {"seed": 0, "steps_per_dispatch": 8}) == []
  assert workdir._differences(old, {"seed": 1, "steps_per_dispatch": 1}) != []


def test_dispatch_ab_prints_a_line_per_run_and_the_ratio(tiny, tmp_path, capsys):
  from benchmarks import dispatch_ab
  out = tmp_path / "ab.jsonl"
  assert dispatch_ab.main([f"--config={tiny}", "--steps_per_dispatch=1,3", "--steps=8",
                           "--log_every=4", "--rounds=1", f"--out={out}",
                           "--config.eval_batch_size=64"]) == 0
  runs = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["steps_per_dispatch"] for r in runs] == [1, 3]
  assert all(r["steps"] == 8 and r["images_per_sec"] > 0
             and r["wall_seconds"] > r["compile_seconds"] > 0 for r in runs)
  table = capsys.readouterr().out.splitlines()[-2:]
  assert table[0].startswith("| 1 | ") and "| 1.000 |" in table[0]
  assert table[1].startswith("| 3 | ")


@pytest.mark.usefixtures("cpu_kernel_library")
def test_a_nonfinite_loss_inside_a_dispatch_is_named_and_never_saved(tiny, synthetic, tmp_path):
  """lr 1e3 blows up a few steps in (step 6 of 12 on the machines measured, inside the
  second dispatch of 3): the step named, the checkpoint kept and the skipped count are
  those of one step at a time, and no saved weight is inf."""
  def run(steps_per_dispatch, nan_policy):
    config = tiny_config(tiny, num_train_steps=12, log_every_steps=6, eval_every_steps=12,
                         checkpoint_every_steps=3, kernels="cpu_library",
                         steps_per_dispatch=steps_per_dispatch, nan_policy=nan_policy)
    config.optimizer.learning_rate = 1e3
    workdir = tmp_path / f"{nan_policy}_{steps_per_dispatch}"
    try:
      loop.train_and_evaluate(config, workdir, synthetic)
    except loop.NonFiniteLoss as error:
      return str(error), error.kept_step, workdir
    return None, read_checkpoint(workdir, 12)["skipped_steps"], workdir

  one, several = run(1, "stop"), run(3, "stop")
  assert several[:2] == one[:2] and one[0].startswith("training loss is not finite at step")
  assert one[1] is not None  # a checkpoint from before the blow-up was kept
  params = read_checkpoint(several[2], several[1])["params"]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  skipped_one, skipped_several = run(1, "skip_step")[1], run(3, "skip_step")[1]
  assert int(skipped_one) >= 1 and int(skipped_several) == int(skipped_one)
