"""rir_jax.kernels.batch_norm against flax.linen.BatchNorm (+ nn.relu: the models' default
norm, rir_jax.models.layers.BatchNorm), its reference."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import batch_norm_ab
from rir_jax.kernels import select
from rir_jax.kernels.batch_norm import BatchNorm, batch_norm_train
from rir_jax.models import get_model
from rir_jax.models.layers import BatchNorm as FlaxBatchNorm

MOMENTUM, EPSILON = 0.9, 1e-5


def _inputs(dtype, shape=(6, 5, 4, 3), seed=0):
  """Activations off-centre and of unequal scale per channel, half below zero."""
  x_key, s_key, b_key, w_key = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(x_key, shape) * jnp.arange(1, shape[-1] + 1) + 0.7
  scale = 1 + 0.5 * jax.random.normal(s_key, shape[-1:])
  bias = 0.3 * jax.random.normal(b_key, shape[-1:])
  # A generic cotangent, so that no term of the backward pass cancels out.
  weights = jax.random.normal(w_key, shape)
  return x.astype(dtype), scale, bias, weights


def _module_pair(train: bool, dtype, relu: bool):
  """Ours and the reference (flax's batch norm, then nn.relu), alike in all else."""
  kwargs = dict(use_running_average=not train, momentum=MOMENTUM, epsilon=EPSILON,
                dtype=dtype, relu=relu)
  return BatchNorm(**kwargs), FlaxBatchNorm(**kwargs)


def _variables(x, scale, bias, seed=1):
  """Given scale and bias, and running averages away from their initial values."""
  mean_key, var_key = jax.random.split(jax.random.key(seed))
  channels = x.shape[-1]
  return {'params': {'scale': scale, 'bias': bias},
          'batch_stats': {'mean': jax.random.normal(mean_key, (channels,)),
                          'var': jax.random.uniform(var_key, (channels,), minval=0.5,
                                                    maxval=2.0)}}


def _relative_error(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_variables_have_flax_names_shapes_and_initial_values():
  x, *_ = _inputs(jnp.float32)
  got = BatchNorm(use_running_average=False, relu=True).init(jax.random.key(0), x)
  want = nn.BatchNorm(use_running_average=False).init(jax.random.key(0), x)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.dtype == w.dtype and g.shape == w.shape
    np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('dtype,tolerance', [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_training_matches_flax_outputs_running_averages_and_gradients(relu, dtype,
                                                                      tolerance):
  x, scale, bias, weights = _inputs(dtype)
  ours, reference = _module_pair(True, dtype, relu)
  variables = _variables(x, scale, bias)

  def loss(apply, params, x):
    y, updates = apply({**variables, 'params': params}, x, mutable=['batch_stats'])
    return jnp.sum(y.astype(jnp.float32) * weights), (y, updates)

  grad = jax.jit(jax.grad(loss, argnums=(1, 2), has_aux=True), static_argnums=0)
  (ours_params, ours_x), (ours_y, ours_stats) = grad(ours.apply, variables['params'], x)
  (ref_params, ref_x), (ref_y, ref_stats) = grad(reference.apply, variables['params'], x)

  assert ours_y.dtype == ref_y.dtype == dtype and ours_x.dtype == dtype
  assert _relative_error(ours_y, ref_y) < tolerance
  assert _relative_error(ours_x, ref_x) < tolerance
  for name in ('scale', 'bias'):
    assert _relative_error(ours_params[name], ref_params[name]) < tolerance, name
  for name in ('mean', 'var'):
    assert _relative_error(ours_stats['batch_stats'][name],
                           ref_stats['batch_stats'][name]) < tolerance, name
    # The running averages moved: the test would not see a frozen average otherwise.
    assert not np.allclose(ours_stats['batch_stats'][name],
                           variables['batch_stats'][name])


@pytest.mark.parametrize('relu', [False, True])
def test_evaluation_uses_running_averages_like_flax(relu):
  x, scale, bias, _ = _inputs(jnp.float32)
  ours, reference = _module_pair(False, jnp.float32, relu)
  variables = _variables(x, scale, bias)
  np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x),
                             rtol=1e-5, atol=1e-6)


def test_relu_zeroes_negatives_and_stops_their_gradient():
  x, scale, bias, weights = _inputs(jnp.float32)
  pre = batch_norm_train(x, scale, bias, epsilon=EPSILON)[0]
  y, backward = jax.vjp(
      lambda x: batch_norm_train(x, scale, bias, epsilon=EPSILON, relu=True)[0], x)
  off = pre <= 0
  assert 0.2 < np.mean(off) < 0.8  # the inputs exercise both sides
  np.testing.assert_array_equal(y, jnp.maximum(pre, 0))
  # A gradient arriving where the ReLU was off changes nothing; elsewhere it does.
  (dx,) = backward(weights)
  (dx_off,) = backward(weights + jnp.where(off, 100.0, 0.0))
  (dx_on,) = backward(weights + jnp.where(off, 0.0, 1.0))
  np.testing.assert_array_equal(dx_off, dx)
  assert not np.allclose(dx_on, dx)


def test_statistics_are_outside_the_gradient():
  x, scale, bias, _ = _inputs(jnp.float32)
  grads = jax.grad(lambda x: sum(jnp.sum(s) for s in batch_norm_train(
      x, scale, bias, epsilon=EPSILON)[1:]))(x)
  np.testing.assert_array_equal(grads, 0)


def test_bfloat16_output_from_float32_input_takes_statistics_of_the_float32_input():
  x, scale, bias, _ = _inputs(jnp.float32)
  y, mean, var = batch_norm_train(x, scale, bias, epsilon=EPSILON, dtype=jnp.bfloat16)
  assert y.dtype == jnp.bfloat16 and mean.dtype == var.dtype == jnp.float32
  np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(var, x.var(axis=(0, 1, 2)), rtol=1e-5)
  dx = jax.grad(lambda x: jnp.sum(batch_norm_train(
      x, scale, bias, epsilon=EPSILON, dtype=jnp.bfloat16)[0].astype(jnp.float32)))(x)
  assert dx.dtype == jnp.float32


@pytest.mark.slow
@pytest.mark.parametrize('kernels', ['xla', 'cpu_library'])
def test_ab_benchmark_prints_the_step_times(capsys, kernels):
  if kernels == 'cpu_library' and not select.cpu_library_usable()[0]:
    pytest.skip(f"oneDNN cannot run here: {select.cpu_library_usable()[1]}")
  # The CNN: its batch norms are the same module as ResNet-20's, in a program that
  # compiles in a fraction of the time (XLA's convolutions compile slowly on a CPU).
  assert batch_norm_ab.main(['--models=cnn', '--dtype=float32', f'--kernels={kernels}',
                             '--batch=8', '--steps=2', '--warmup=1']) == 0
  (row,) = map(json.loads, capsys.readouterr().out.splitlines())
  assert (row['model'], row['dtype'], row['kernels']) == ('cnn', 'float32', kernels)
  assert row['ours_step_ms'] > 0 and row['flax_step_ms'] > 0
  assert row['speedup'] == pytest.approx(row['flax_step_ms'] / row['ours_step_ms'])
  # On the CPU library, a third step takes batch norm's sums on XLA instead.
  assert ('kernels_speedup' in row) == (kernels == 'cpu_library')
  if kernels == 'cpu_library':
    assert row['kernels_speedup'] == pytest.approx(
        row['xla_passes_step_ms'] / row['ours_step_ms'])


@pytest.mark.parametrize('name,kwargs', [('resnet', dict(depth=8)), ('rir', {}),
                                         ('cnn', {})])
def test_models_compute_what_they_computed_with_flax_batch_norm(name, kwargs):
  """Flax's batch norm (the models' default) in place of ours (what the training code
  gives them) changes neither loss nor gradients. Where each ReLU sits is checked
  against the PyTorch replicas (tests/test_throughput.py)."""
  model = select.build_model(name, num_classes=10, kernels='xla', **kwargs)
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  labels = jnp.arange(4)
  variables = model.init(jax.random.key(1), x, train=False)

  def loss_and_grads(model):
    def loss(params):
      logits, updates = model.apply({**variables, 'params': params}, x, train=True,
                                    mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])

  ours = loss_and_grads(model)
  reference = loss_and_grads(get_model(name, num_classes=10, **kwargs))
  assert jax.tree.structure(ours) == jax.tree.structure(reference)
  for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
