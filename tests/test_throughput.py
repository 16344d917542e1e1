"""benchmarks/throughput.py on a tiny setting, and its PyTorch replicas against flax."""
import functools
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import throughput, throughput_table
from benchmarks.throughput_table import TORCH_MODES
from rir_jax.kernels import conv, select
from rir_jax.models import count_params, get_model

POSITIVE = ("params", "jax_images_per_sec", "train_flops_per_step", "jax_gflops_per_sec",
            "peak_gflops_per_sec", "fraction_of_peak", "jax_compile_seconds",
            "eval_images_per_sec")
KEYS = (*POSITIVE, "model", "batch", "dtype", "device_kind", "peak_dtype", "flops_source",
        "host_cpu_used_by_others", "input_pipeline_share", "torch_modes", "torch_compile_seconds",
        *(f"torch_{mode}_images_per_sec" for mode in TORCH_MODES),
        *(f"jax_over_torch_{mode}" for mode in TORCH_MODES))
TINY = dict(steps=2, warmup=1, eval_batch=32)
REPO = pathlib.Path(__file__).resolve().parent.parent


def check_row(row: dict, model: str, batch: int) -> None:
  assert set(KEYS) <= row.keys()
  assert (row["model"], row["batch"], row["dtype"]) == (model, batch, "float32")
  for key in POSITIVE:
    assert row[key] > 0, key
  assert row["input_pipeline_share"] < 1
  assert row["device_kind"] and row["backend"] == "cpu"


@pytest.mark.slow
def test_main_writes_one_json_line_without_torch(tmp_path):
  out = tmp_path / "throughput.jsonl"
  assert throughput.main(["--models=resnet", "--batch=16", "--steps=2", "--warmup=1",
                          "--eval_batch=32", "--no_torch", "--system_malloc",
                          "--out", str(out)]) == 0
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  # One row per back end that runs here.
  assert [row["kernels"] for row in rows] == sorted({"xla", select.resolve("auto")}, reverse=True)
  # Both count the convolutions' FLOPs, though XLA cannot see inside oneDNN's.
  assert rows[0]["train_flops_per_step"] == pytest.approx(rows[-1]["train_flops_per_step"],
                                                        rel=0.01)
  for row in rows:
    check_row(row, "resnet", 16)
    assert row["torch_modes"] == [] and row["torch_compile_seconds"] is None
    assert all(row[f"torch_{mode}_images_per_sec"] is None for mode in TORCH_MODES)
    assert row["peak_dtype"] == "float32"
    assert row["host_cpu_simd"] in ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "other")
  table = throughput_table.markdown(rows).splitlines()
  assert len(table) == 2 + len(rows)
  assert table[2].startswith("| ResNet-20 (`resnet`, ")  # the model named once, in full
  assert table[-1].startswith("| ResNet-20 | float32 | 16 | ")
  assert all(line.count("|") == len(throughput_table.header([])) + 1 for line in table)
  assert "PyTorch" not in table[0]  # no PyTorch: no columns of it


def test_torch_modes_without_torch_is_a_one_line_error(monkeypatch, capsys):
  monkeypatch.setattr(throughput, "torch", None)
  assert throughput.main(["--torch_modes=compile", "--system_malloc"]) == 2
  error = capsys.readouterr().err
  assert error == ("error: --torch_modes=compile: PyTorch is not installed "
                   "(pip install torch==2.13.0)\n")


def test_runs_as_a_module_from_the_repository_root():
  result = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "--torch_modes" in result.stdout


@pytest.mark.slow
def test_measure_against_eager_and_compiled_torch(synthetic):
  pytest.importorskip("torch")
  with throughput.compiling_from_scratch():
    row = throughput.measure("resnet", 16, "float32", dataset=synthetic, peak_gflops=1.0,
                             peak_dtype="float32", torch_modes=["eager", "compile"],
                             model_kwargs={"depth": 8}, **TINY)
  check_row(row, "resnet", 16)
  assert row["params"] == 75290  # depth 8 reached both frameworks
  assert row["torch_modes"] == ["eager", "compile"] and row["torch_compile_seconds"] > 0
  for mode in TORCH_MODES:
    speed = row[f"torch_{mode}_images_per_sec"]
    assert speed > 0
    assert row[f"jax_over_torch_{mode}"] == pytest.approx(row["jax_images_per_sec"] / speed)
  titles, _, cells = (line.strip("|").split(" | ")
                      for line in throughput_table.markdown([row]).splitlines())
  columns = dict(zip(map(str.strip, titles), map(str.strip, cells)))
  for title in ("PyTorch eager img/s", "JAX / eager", "PyTorch compile img/s", "JAX / compile",
                "torch.compile s"):
    assert float(columns[title].replace(",", "")) > 0, title


def test_table_reads_lines_from_before_torch_modes():
  """The recorded runs named eager PyTorch's numbers torch_images_per_sec and ratio."""
  path = REPO / "benchmarks" / "results" / "throughput_cpu.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  table = throughput_table.markdown(rows).splitlines()
  assert "| PyTorch eager img/s | JAX / eager |" in table[0] and "compile img/s" not in table[0]
  assert f"| {rows[0]['torch_images_per_sec']:,.0f} | {rows[0]['ratio']:.2f} |" in table[2]


def test_step_flops_counts_for_the_cpu_when_the_compiled_count_misses_work():
  x = jnp.ones((64, 64))
  compiled = jax.jit(jnp.dot).lower(x, x).compile()
  assert throughput.step_flops(compiled, jnp.dot, x, x) == (2 * 64**3, "compiled")

  class Blind:  # as the GPU backend counts its cuDNN convolutions
    def cost_analysis(self):
      return [{"flops": 0.0}]

  assert throughput.step_flops(Blind(), jnp.dot, x, x) == (2 * 64**3, "lowered_for_cpu")


@pytest.mark.parametrize("name", ["resnet", "rir", "rir_paper"])
def test_replica_has_the_same_parameter_count(name):
  torch_models = pytest.importorskip("benchmarks.torch_models")
  model = get_model(name, num_classes=10)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, 32, 32, 3)), train=False))
  replica = torch_models.get_model(name, num_classes=10)
  assert torch_models.count_params(replica) == count_params(shapes["params"])


def items(tree, path=()):
  """(path, leaf) pairs of nested dicts in insertion order (jax.tree sorts keys)."""
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from items(value, (*path, key))
    else:
      yield (*path, key), value


def random_variables(model, rng) -> dict:
  """Random variables for `model`, nested in flax's creation order.

  Tracing init under eval_shape gives the shapes and the order without compiling the
  random initializers (seconds of XLA time on a CPU); jax.tree would sort the keys.
  """
  found = []

  def init():
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    found.extend(items(variables))
    return variables

  jax.eval_shape(init)
  variables = {}
  for path, leaf in found:
    shape = leaf.shape
    node = variables
    for key in path[:-1]:
      node = node.setdefault(key, {})
    # Kernels He-normal; scales, biases, means and variances (kept positive) all
    # differ, so that two swapped layers of one shape would show.
    fan_in = np.prod(shape[:-1])
    value = (rng.uniform(0.5, 1.5, shape) if len(shape) == 1
             else rng.normal(0.0, np.sqrt(2.0 / fan_in), shape))
    node[path[-1]] = value.astype(np.float32)
  return variables


def load_into(replica, variables) -> None:
  """Copies flax variables into the replica, pairing them in order, shape-checked."""
  import torch
  ours = [*replica.parameters(),
          *(b for n, b in replica.named_buffers() if not n.endswith("num_batches_tracked"))]
  theirs = [leaf for collection in ("params", "batch_stats")
            for _, leaf in items(variables[collection])]
  assert len(ours) == len(theirs)
  for target, value in zip(ours, theirs):
    # HWIO kernels -> OIHW, (in, out) dense -> (out, in).
    value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    assert tuple(target.shape) == value.shape
    with torch.no_grad():
      target.copy_(torch.from_numpy(value))


@pytest.mark.parametrize("name,kwargs", [
    ("resnet", {}), ("resnet", {"depth": 8, "shortcut": "projection"}), ("rir", {}),
    ("rir", {"blocks_per_stage": (1, 2, 1), "shortcut": "zero_pad", "head": "conv_bn"}),
])
def test_replica_computes_the_same_function(name, kwargs):
  torch_models = pytest.importorskip("benchmarks.torch_models")
  import torch
  model = get_model(name, num_classes=10, **kwargs)
  variables = random_variables(model, np.random.default_rng(0))
  replica = torch_models.get_model(name, num_classes=10, **kwargs)
  load_into(replica, variables)
  x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
  x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  for train in (False, True):
    # One compiled forward costs less than dispatching each op on its own.
    forward = jax.jit(functools.partial(model.apply, train=train, mutable=["batch_stats"]))
    expected, _ = forward(variables, x)
    with torch.no_grad():
      got = replica.train(train)(x_torch).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=f"train={train}")


def test_conv_ops_times_every_shape_and_pass_on_both_implementations(capsys):
  if not conv.is_available()[0]:
    pytest.skip(f"oneDNN unavailable: {conv.is_available()[1]}")
  from benchmarks import conv_ops
  assert conv_ops.main(["--batch=2", "--reps=1", "--dtype=float32"]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert len(rows) == len(conv_ops.SHAPES) * 3
  assert {row["pass"] for row in rows} == {"forward", "grad_input", "grad_weight"}
  for row in rows:
    assert row["xla_ms"] > 0 and row["onednn_ms"] > 0
    # Both sides rounded as printed: ms to 4 decimals, the speed-up to 2.
    assert row["speedup"] == pytest.approx(row["xla_ms"] / row["onednn_ms"], rel=0.01,
                                           abs=0.005)


def test_throughput_ab_sets_medians_and_ratio_side_by_side(tmp_path):
  from benchmarks import throughput_ab
  line = {"model": "resnet", "batch": 128, "dtype": "float32"}
  for side, runs in (("a", (100.0, 300.0, 170.0)), ("b", (400.0, 110.0, 187.0))):
    for i, speed in enumerate(runs):
      (tmp_path / f"{side}{i}.jsonl").write_text(
          json.dumps({**line, "jax_images_per_sec": speed}) + "\n"
          + json.dumps({**line, "model": "rir", "jax_images_per_sec": speed / 2}) + "\n")
  table = throughput_ab.markdown(throughput_ab.speeds(throughput_ab.read_runs(f"{tmp_path}/a*")),
                                 throughput_ab.speeds(throughput_ab.read_runs(f"{tmp_path}/b*")))
  rows = {cells[0]: cells for cells in (line.split(" | ") for line in table.splitlines()[2:])}
  assert rows["| resnet"][3:8] == ["100, 300, 170", "400, 110, 187", "170", "187", "1.100"]
  assert rows["| rir"][5:8] == ["85", "94", "1.100"]  # the medians halved: same ratio
  assert rows["| resnet"][8] == "3.00, 3.64 |"
  with pytest.raises(SystemExit, match="no file matches"):
    throughput_ab.read_runs(f"{tmp_path}/none*")
