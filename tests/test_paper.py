"""The paper's rows (configs/paper.py), their significance statistics and benchmarks/paper.py."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from benchmarks import paper as paper_benchmark
from benchmarks import significance
from configs import default, paper
from rir_jax.models import count_params, get_model
from rir_jax.models.rir import PlainPairBlock, RiRBlock


def params_of(config, num_classes=10):
  model = get_model(**config.model.to_dict(), num_classes=num_classes)
  x = jnp.zeros((1, 32, 32, 3))
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))["params"]


@pytest.mark.parametrize("scale, rir_params", [("paper", 9_516_020), ("cpu", 266_330)])
def test_every_row_has_the_rirs_parameter_count_within_one_percent(scale, rir_params):
  counts = {row: count_params(params_of(paper.get_config(f"row={row},scale={scale}")))
            for row in paper.ROWS}
  assert counts["rir"] == rir_params  # the RiR row is the registry's model, unchanged
  for row, count in counts.items():
    assert abs(count / rir_params - 1) < 0.01, (row, count)


def test_rows_differ_only_in_their_switches_and_the_rir_row_is_the_main_config():
  from configs import rir_cifar
  assert paper.get_config("row=rir").to_dict() | {"keep_checkpoints": 0} == (
      rir_cifar.get_config().to_dict() | {"keep_checkpoints": 0})
  for row, switches in paper.ROWS.items():
    model = paper.get_config(f"row={row}").model.to_dict()
    assert model == rir_cifar.get_config().model.to_dict() | switches
  plain = params_of(paper.get_config("row=cnn"))
  assert "stem_conv" in plain and "stem_conv_r" not in plain  # one stream
  assert plain["stem_conv"]["kernel"].shape == (3, 3, 3, 96)  # of twice a stream's width


def zero_kernels(variables):
  return jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v) if "kernel" in jax.tree_util.keystr(path) else v,
      variables)


@pytest.mark.parametrize("outer_shortcut", [True, False])
def test_plain_pair_block_adds_its_input_only_with_the_outer_shortcut(outer_shortcut):
  block = PlainPairBlock(8, outer_shortcut=outer_shortcut)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 6, 8))
  variables = zero_kernels(block.init(jax.random.PRNGKey(1), x, train=False))
  y = block.apply(variables, x, train=False)  # zero kernels: both layers output relu(0) = 0
  np.testing.assert_allclose(y, x if outer_shortcut else jnp.zeros_like(x), atol=1e-6)


def test_rir_block_without_outer_shortcut_is_two_generalized_blocks():
  r, t = (jax.random.normal(k, (2, 6, 6, 8)) for k in jax.random.split(jax.random.PRNGKey(0)))
  with_outer, without = RiRBlock(8), RiRBlock(8, outer_shortcut=False)
  variables = with_outer.init(jax.random.PRNGKey(1), r, t, train=False)
  r1, t1 = with_outer.apply(variables, r, t, train=False)
  r0, t0 = without.apply(variables, r, t, train=False)  # same parameters, no outer sum
  np.testing.assert_allclose(r1, r0 + r, atol=1e-5)
  np.testing.assert_allclose(t1, t0, atol=1e-6)


def test_single_conv_needs_the_generalized_block():
  with pytest.raises(ValueError, match="single_conv"):
    get_model("rir", num_classes=10, block="plain", single_conv=True)


def test_parse_arg_types_booleans_and_unknown_keys():
  args = default.parse_arg("row=cnn,smoke,epochs=3", row="rir", smoke=False, epochs=1.0)
  assert (args.row, args.smoke, args.epochs) == ("cnn", True, 3.0)
  assert default.parse_arg(None, row="rir").row == "rir"
  with pytest.raises(ValueError, match="unknown config argument 'colour'"):
    default.parse_arg("colour=red", row="rir")
  with pytest.raises(ValueError, match="true or false"):
    default.parse_arg("smoke=maybe", smoke=False)
  with pytest.raises(ValueError, match="row=cnn|resnet"):
    paper.get_config("row=vgg")


def test_welch_interval_matches_a_worked_example():
  # Means 2 and 5, variances 1 and 1, n = 3: se = sqrt(2/3), df = 4, t(0.975, 4) = 2.7764.
  result = significance.welch_interval([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
  assert result["difference"] == -3.0 and result["df"] == pytest.approx(4.0)
  assert result["low"] == pytest.approx(-3 - 2.776445 * (2 / 3) ** 0.5, abs=1e-5)
  assert result["high"] == pytest.approx(-3 + 2.776445 * (2 / 3) ** 0.5, abs=1e-5)
  assert result["p"] == pytest.approx(stats.ttest_ind([1, 2, 3], [4, 5, 6], equal_var=False).pvalue)


def test_welch_interval_unequal_spreads_and_no_interval_cases():
  a, b = [0.91, 0.93, 0.92, 0.95], [0.90, 0.90, 0.91]
  result = significance.welch_interval(a, b)
  reference = stats.ttest_ind(a, b, equal_var=False)
  assert result["p"] == pytest.approx(reference.pvalue)
  assert result["df"] == pytest.approx(reference.df)
  assert significance.welch_interval([0.9], [0.8, 0.85])["low"] is None
  assert significance.welch_interval([0.9, 0.9], [0.8, 0.8])["p"] is None


def test_sentences_say_which_row_leads_and_whether_it_is_significant():
  clear = {"first": "rir", "second": "cnn", **significance.welch_interval([.95, .96, .97], [.90, .91, .89])}
  assert significance.sentence(clear).startswith("rir is 6.00 points ahead of cnn")
  assert significance.sentence(clear).endswith(": significant.")
  noisy = {"first": "rir", "second": "resnet", **significance.welch_interval([.90, .95, .85], [.91, .92, .93])}
  assert "resnet is 2.00 points ahead of rir" in significance.sentence(noisy)
  assert "not significant" in significance.sentence(noisy)
  # p is written to 3 decimals, and a p below 0.001 as such, never as "p = 0.000".
  small = {"first": "a", "second": "b", "difference": 0.02, "low": 0.01, "high": 0.03,
           "p": 0.0004}
  assert "(a - b: 95% CI +1.00 to +3.00, p < 0.001): significant." in significance.sentence(small)
  assert "p = 0.153)" in significance.sentence({**small, "p": 0.1534})
  pairs = significance.pairwise({"a": [1, 2], "b": [2, 3], "c": [3, 5]})
  assert [(p["first"], p["second"]) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]


@pytest.mark.slow
def test_paper_benchmark_smoke_end_to_end_reuses_finished_runs(tmp_path, capsys):
  out = tmp_path / "paper"
  argv = ["--scale=cpu", "--smoke", "--seeds=2", "--rows=cnn,rir", f"--out={out}"]
  assert paper_benchmark.main(argv) == 0
  results = json.loads((out / "results.json").read_text())
  assert [r["model"] for r in results["rows"]] == ["cnn", "rir"]
  assert all(len(r["runs"]) == 2 for r in results["rows"])
  assert [(d["first"], d["second"]) for d in results["differences"]] == [("cnn", "rir")]
  table = (out / "results.md").read_text()
  assert "| cnn |" in table and "| rir |" in table and "Welch" in table
  assert (out / "curves.png").stat().st_size > 0
  capsys.readouterr()
  assert paper_benchmark.main([*argv, "--report_only"]) == 0
  assert "== " not in capsys.readouterr().out  # nothing trained again
  assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
  assert "Runs finished so far" not in (out / "results.md").read_text()
  assert paper_benchmark.main([*argv, "--seeds=3", "--report_only"]) == 0  # the last wins
  assert "Runs finished so far: 4 of 6" in (out / "results.md").read_text()
