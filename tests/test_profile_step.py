"""benchmarks/profile_step.py: the trace of a real step, summed by operation."""
import json
import os

import pytest

from benchmarks import profile_step
from rir_jax.kernels import select


def profile(capsys, *flags: str) -> tuple[list[dict], dict]:
  assert profile_step.main(["--batch=16", "--steps=2", "--system_malloc", *flags]) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  return lines[:-1], lines[-1]


def check_totals(rows: list[dict], summary: dict) -> None:
  busy = sum(row["ms_per_step"] for row in rows)
  assert summary["step_ms"] > 0 and busy > 0
  # Operations overlap only where threads ran them side by side.
  assert busy <= summary["step_ms"] * summary["threads"] * 1.01
  assert sum(row["share_of_step"] for row in rows) == pytest.approx(busy / summary["step_ms"])
  assert summary["untraced_step_ms"] > 0
  assert summary["traced_over_untraced"] == pytest.approx(
      summary["step_ms"] / summary["untraced_step_ms"])
  assert summary["peak_resident_mb"] > 0
  assert 0 < summary["cores_busy"] <= os.cpu_count() * 1.05
  assert 0 <= summary["kernel_share_of_cpu_time"] <= 1
  assert [row["ms_per_step"] for row in rows] == sorted(
      (row["ms_per_step"] for row in rows), reverse=True)
  assert summary["minor_page_faults_per_step"] >= 0  # counted (tests/test_host_memory.py)
  # Every step runs the same program: an operation seen a fractional number of times per
  # step means events were lost (a thread not read, a step cut by the trace's start).
  assert all(row["calls_per_step"] == int(row["calls_per_step"]) for row in rows), rows


@pytest.mark.slow
def test_xla_step_is_mostly_convolutions_and_fusions(capsys):
  rows, summary = profile(capsys, "--kernels=xla")
  check_totals(rows, summary)
  kinds = {row["operation"]: row for row in rows}
  assert kinds["xla convolution"]["ms_per_step"] > 0
  assert not any(kind.startswith("onednn") for kind in kinds)
  assert summary["model"] == "resnet" and summary["kernels"] == "xla"


@pytest.mark.slow
@pytest.mark.skipif(not select.cpu_library_usable()[0], reason="oneDNN cannot run here")
def test_onednn_passes_are_named_and_counted(capsys):
  rows, summary = profile(capsys, "--conv_impl=onednn")  # the old spelling, still taken
  check_totals(rows, summary)
  calls = {row["operation"]: row["calls_per_step"] for row in rows}
  # ResNet-20 has 19 convolutions; the stem's input needs no gradient.
  assert calls["onednn convolution: forward"] == 19
  assert calls["onednn convolution: input gradient"] == 18
  assert calls["onednn convolution: weight gradient"] == 19
  assert "xla convolution" not in calls


def test_operation_kind_drops_the_instruction_number():
  targets = {"ffi_call.3": "RirOnednnConvBackwardData", "custom-call.1": "Other"}
  assert profile_step.operation_kind("ffi_call.3", targets) == (
      "onednn convolution: input gradient")
  assert profile_step.operation_kind("custom-call.1", targets) == "custom call Other"
  assert profile_step.operation_kind("add_maximum_fusion.12", targets) == "add_maximum_fusion"
  assert profile_step.operation_kind("convolution.4", targets) == "xla convolution"
