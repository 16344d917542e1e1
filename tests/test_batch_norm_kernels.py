"""Batch norm's sums on the CPU kernels against numpy and against XLA's passes."""
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rir_jax.kernels import batch_norm as batch_norm_kernels, select
from rir_jax.kernels.batch_norm import batch_norm_train

# Rank 2 to 4; more rows than one chunk of 512 (and not a multiple of it); channel
# counts that are whole blocks of 16, a block and a remainder, and a remainder alone.
SHAPES = [(9, 11, 13, 40), (700, 16), (4, 5, 3), (2, 3, 4, 64)]


pytestmark = pytest.mark.usefixtures("cpu_kernel_library")


def _array(shape, dtype, seed):
  """Off-centre, per-channel scaled values, exactly representable in `dtype`."""
  x = jax.random.normal(jax.random.key(seed), shape) * jnp.arange(1, shape[-1] + 1) + 0.5
  return x.astype(dtype)


def _assert_sums_close(actual, expected, scale, tolerance=1e-5):
  """f32 sums of up to ~1300 terms: relative to the sum of magnitudes."""
  np.testing.assert_array_less(np.abs(np.asarray(actual) - expected), tolerance * scale + 1e-30)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_stats_are_the_sums_of_x_and_x_squared(shape, dtype):
  x = _array(shape, dtype, seed=0)
  sums = jax.jit(batch_norm_kernels.stats)(x)
  assert sums.shape == (2, shape[-1]) and sums.dtype == jnp.float32
  x64 = np.asarray(x, np.float64).reshape(-1, shape[-1])
  _assert_sums_close(sums[0], x64.sum(0), np.abs(x64).sum(0))
  _assert_sums_close(sums[1], (x64 ** 2).sum(0), (x64 ** 2).sum(0))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x_dtype,dy_dtype", [(jnp.float32, jnp.float32),
                                              (jnp.bfloat16, jnp.bfloat16),
                                              (jnp.float32, jnp.bfloat16),
                                              (jnp.bfloat16, jnp.float32)])
@pytest.mark.parametrize("relu", [False, True])
def test_grad_sums_mask_the_gradient_where_the_relu_was_off(shape, x_dtype, dy_dtype, relu):
  x = _array(shape, x_dtype, seed=1)
  channels = shape[-1]
  a = jnp.linspace(-1.5, 2.0, channels)  # negative scales flip the mask too
  b = jnp.linspace(0.3, -0.4, channels)
  pre = np.asarray(x, np.float64) * np.asarray(a) + np.asarray(b)
  # No gradient where x * a + b is within rounding of 0: f32 may round either way.
  dy = jnp.where(np.abs(pre) < 1e-3, 0, _array(shape, jnp.float32, seed=2)).astype(dy_dtype)
  sums = jax.jit(batch_norm_kernels.grad_sums, static_argnums=4)(x, dy, a, b, relu)
  g = np.asarray(dy, np.float64) * ((pre > 0) if relu else 1)
  if relu:
    assert 0.2 < np.mean(pre > 0) < 0.8  # the inputs exercise both sides of the mask
  g, x64 = g.reshape(-1, channels), np.asarray(x, np.float64).reshape(-1, channels)
  _assert_sums_close(sums[0], g.sum(0), np.abs(g).sum(0))
  _assert_sums_close(sums[1], (g * x64).sum(0), np.abs(g * x64).sum(0))


def test_sums_do_not_depend_on_the_run():
  """Chunks are added in a fixed order, however the threads shared them."""
  x = _array((64, 16, 16, 16), jnp.float32, seed=3)
  runs = [np.asarray(jax.jit(batch_norm_kernels.stats)(x)) for _ in range(5)]
  for run in runs[1:]:
    np.testing.assert_array_equal(run, runs[0])


def test_other_dtypes_and_partial_vectors_are_left_to_xla():
  x = jnp.ones((4, 8), jnp.float16)
  assert not batch_norm_kernels.applies(x)
  assert not batch_norm_kernels.applies(jnp.ones((8,), jnp.float32))  # no batch axis
  # Channels past whole vectors of 16 would be slow: XLA takes those sums.
  assert batch_norm_kernels.applies(jnp.ones((4, 32), jnp.float32))
  assert not batch_norm_kernels.applies(jnp.ones((4, 8), jnp.float32))
  with pytest.raises(Exception, match="only f32 and bf16"):
    jax.jit(batch_norm_kernels.stats)(x).block_until_ready()


def _train_loss(kernels, dtype):
  """jit(value_and_grad) of a loss through batch_norm_train + ReLU."""
  def loss(x, scale, bias, weights):
    y, mean, var = batch_norm_train(x, scale, bias, epsilon=1e-5, relu=True, dtype=dtype,
                                    kernels=kernels)
    return jnp.sum(y.astype(jnp.float32) * weights), (mean, var)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def _train_operands(shape, dtype):
  channels = shape[-1]
  return (_array(shape, dtype, seed=4), 1 + 0.3 * jnp.cos(jnp.arange(channels)),
          0.2 * jnp.sin(jnp.arange(channels)), _array(shape, jnp.float32, seed=5))


def _assert_trees_close(actual, expected, tolerance):
  for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert np.max(np.abs(got - want)) <= tolerance * np.max(np.abs(want))


@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_batch_norm_on_the_kernels_matches_xla(dtype, tolerance):
  """Output, statistics and the gradients of x, scale and bias."""
  operands = _train_operands((9, 11, 13, 40), dtype)
  _assert_trees_close(_train_loss(True, dtype)(*operands),
                      _train_loss(False, dtype)(*operands), tolerance)


def test_a_bfloat16_sum_is_normalised_as_written():
  """Sums and normalising pass read one rounded x: a residual sum of two bf16 arrays
  normalises bit for bit as that sum written out first, not from a float32 copy."""
  x, scale, bias, _ = _train_operands((8, 6, 6, 32), jnp.bfloat16)
  other = _array(x.shape, jnp.bfloat16, seed=6)
  def normalize(x):
    return batch_norm_train(x, scale, bias, epsilon=1e-5, relu=True, kernels=True)[0]
  fused = jax.jit(lambda x, other: normalize(x + other))(x, other)
  np.testing.assert_array_equal(fused, jax.jit(normalize)(jax.jit(jnp.add)(x, other)))


def test_a_split_batch_stays_split():
  """On 8 devices each sums its slice, then the sums are added: no gather."""
  mesh = Mesh(jax.devices(), ("data",))
  split = NamedSharding(mesh, PartitionSpec("data"))
  x, scale, bias, weights = _train_operands((16, 6, 6, 32), jnp.float32)
  x, weights = jax.device_put(x, split), jax.device_put(weights, split)
  step = _train_loss(True, jnp.float32)
  (loss, stats), grads = step(x, scale, bias, weights)
  _assert_trees_close((loss, stats, grads), _train_loss(False, jnp.float32)(
      np.asarray(x), scale, bias, np.asarray(weights)), 1e-5)
  assert grads[0].sharding.is_equivalent_to(split, 4)
  hlo = step.lower(x, scale, bias, weights).compile().as_text()
  assert "RirBatchNormStats" in hlo and "RirBatchNormGradSums" in hlo
  # The devices' sums are gathered (8 x [2, 32]) to be added in a fixed order; nothing
  # else is: no activation leaves its device.
  gathers = [line for line in hlo.splitlines() if " all-gather(" in line]
  assert gathers and all("f32[8,2,32]" in line for line in gathers), gathers


def test_an_uneven_split_sums_no_padding():
  """A 12-row slice of a 16-row batch split 8 ways: no slice's padding counts."""
  mesh = Mesh(jax.devices(), ("data",))
  x = jax.device_put(_array((16, 5, 5, 16), jnp.float32, 6), NamedSharding(
      mesh, PartitionSpec("data")))
  got = jax.jit(lambda x: batch_norm_kernels.stats(jnp.cos(x[:12])))(x)
  x64 = np.cos(np.asarray(x, np.float64)[:12]).reshape(-1, 16)
  _assert_sums_close(got[0], x64.sum(0), np.abs(x64).sum(0))


def test_a_split_batch_of_rank_2_keeps_its_coefficients_whole():
  """[batch, C] activations have the coefficients' rank: only the activations split."""
  mesh = Mesh(jax.devices(), ("data",))
  split = NamedSharding(mesh, PartitionSpec("data"))
  x, dy = _array((64, 32), jnp.float32, 8), _array((64, 32), jnp.float32, 9)
  a, b = jnp.linspace(-1.0, 1.0, 32), jnp.linspace(0.5, -0.5, 32)
  grad_sums = jax.jit(batch_norm_kernels.grad_sums, static_argnums=4)
  got = grad_sums(jax.device_put(x, split), jax.device_put(dy, split), a, b, True)
  np.testing.assert_allclose(got, grad_sums(x, dy, a, b, True), rtol=1e-5, atol=1e-5)


def test_vmap_runs_once_per_element():
  x = _array((3, 10, 4, 16), jnp.float32, seed=7)
  batched = jax.jit(jax.vmap(batch_norm_kernels.stats))(x)
  for i in range(3):
    np.testing.assert_allclose(batched[i], batch_norm_kernels.stats(x[i]), rtol=1e-6)


def test_shard_map_takes_xla_sums():
  """Inside shard_map FFI results would lack their manual-axis types."""
  mesh = Mesh(jax.devices(), ("data",))
  seen = []
  def per_shard(x):
    seen.append(batch_norm_kernels.applies(x))
    return x
  jax.shard_map(per_shard, mesh=mesh, in_specs=PartitionSpec("data"),
                out_specs=PartitionSpec("data"))(jnp.ones((8, 4, 16)))
  assert seen == [False]


@pytest.mark.parametrize("name,kwargs,calls", [
    ("resnet", dict(depth=8), 7),  # every batch norm, forward and backward
    ("cnn", {}, 19),
    ("rir", dict(widths=(16, 32), blocks_per_stage=(1, 1)), 2),  # the two stems only
])
def test_models_take_kernel_sums_on_onednn_and_compute_the_same(name, kwargs, calls):
  model = select.build_model(name, num_classes=10, kernels="cpu_library", **kwargs)
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3))
  labels = jnp.arange(8) % 10
  variables = model.init(jax.random.key(1), x, train=False)

  def loss(params):
    logits, updates = model.apply({**variables, "params": params}, x, train=True,
                                  mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

  def compiled():  # traced anew, so with whatever `applies` says now
    return jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(variables["params"]).compile()

  hlo = compiled().as_text()
  assert hlo.count('custom_call_target="RirBatchNormStats"') == calls
  assert hlo.count('custom_call_target="RirBatchNormGradSums"') == calls
  with_kernels = compiled()(variables["params"])
  with mock.patch.object(batch_norm_kernels, "applies", lambda *arrays: False):
    assert "RirBatchNorm" not in compiled().as_text()
    with_xla = compiled()(variables["params"])
  for got, want in zip(jax.tree.leaves(with_kernels), jax.tree.leaves(with_xla)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_bfloat16_resnet_step_holds_its_activations_once():
  """In bf16 a step's scratch is about half the f32 step's, with no float32 copy of the
  residual stream beside the bf16 one that the kernels read (0.71x with that copy)."""
  x = jax.random.normal(jax.random.key(0), (16, 16, 16, 3))
  labels = jnp.arange(16) % 10

  def scratch_bytes(dtype):
    model = select.build_model("resnet", num_classes=10, kernels="cpu_library", dtype=dtype,
                               depth=8)
    variables = model.init(jax.random.key(1), x, train=False)

    def loss(params):
      logits, updates = model.apply({**variables, "params": params}, x, train=True,
                                    mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

    step = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(variables["params"])
    return step.compile().memory_analysis().temp_size_in_bytes

  assert scratch_bytes(jnp.bfloat16) <= 0.6 * scratch_bytes(jnp.float32)
