"""benchmarks/profile_torch.py: the PyTorch replica's step, traced and summed by kind."""
import json

import pytest

torch = pytest.importorskip("torch")  # a benchmark-only dependency
from benchmarks import profile_torch  # noqa: E402


@pytest.mark.parametrize("name, kind", [
    ("aten::convolution_backward", "convolution: backward (input and weight gradients)"),
    ("aten::mkldnn_convolution", "convolution: forward"),
    ("cpp_fused__native_batch_norm_legit_functional_relu_0", "Inductor's generated kernels"),
    ("aten::native_batch_norm", "batch norm (ATen)"),
    ("aten::_to_copy", "copies and conversions (ATen)"),
    ("aten::add_", "other ATen operations"),
    ("Optimizer.step#SGD.step", "other: Optimizer.step#SGD.step"),
])
def test_operations_are_grouped_by_kind(name, kind):
  assert profile_torch.operation_kind(name) == kind


@pytest.mark.slow
def test_an_eager_step_is_mostly_its_convolutions(capsys):
  assert profile_torch.main(["--mode=eager", "--dtype=float32", "--batch=16", "--steps=2"]) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith("{")]
  rows, summary = lines[:-1], lines[-1]
  kinds = {row["kind"]: row for row in rows}
  # ResNet-20: 19 convolutions forward, each with its backward, 19 batch norms.
  assert kinds["convolution: forward"]["calls_per_step"] == 19
  assert kinds["convolution: backward (input and weight gradients)"]["calls_per_step"] >= 19
  assert kinds["batch norm (ATen)"]["calls_per_step"] >= 19
  assert [r["ms_per_step"] for r in rows] == sorted((r["ms_per_step"] for r in rows),
                                                    reverse=True)
  assert summary["summed_ms"] == pytest.approx(sum(r["ms_per_step"] for r in rows))
  # Self times add up to no more than the step on every thread the operations ran on.
  assert 0 < summary["summed_ms"] <= summary["step_ms"] * summary["threads"]
  assert summary["untraced_step_ms"] > 0
