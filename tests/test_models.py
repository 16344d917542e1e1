"""Models: shapes, parameter counts, and the properties of the paper's Eq. 1."""
import ast
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rir_jax import models

CIFAR = (32, 32, 3)
MNIST = (28, 28, 1)
BN_EPSILON = 1e-5


def _init(model, shape, batch=2, seed=0):
  x = jax.random.normal(jax.random.key(seed + 1), (batch, *shape))
  return model.init(jax.random.key(seed), x, train=False), x


def _param_count(name, **kwargs):
  model = models.get_model(name, num_classes=10, **kwargs)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *CIFAR)), train=False))
  return models.count_params(shapes['params'])


def _randomize(tree, seed):
  """Every leaf replaced by noise, so no test passes on an all-ones BN scale."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten(
      [0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


def _random_variables(variables, seed):
  """Random params and running statistics (variances kept positive: no NaN to compare)."""
  variables = _randomize(variables, seed)
  variables['batch_stats'] = jax.tree.map(lambda v: jnp.abs(v) + 0.1,
                                          variables['batch_stats'])
  return variables


# --- every model --------------------------------------------------------------------

SHAPE_CASES = [pytest.param(name, shape, id=f'{name}-{data}')
               for name in models.MODEL_NAMES
               for data, shape in (('cifar', CIFAR), ('mnist', MNIST))
               if not (name == 'rir_paper' and shape == MNIST)]  # the 9.5M model once


@pytest.mark.parametrize('name,shape', SHAPE_CASES)
def test_forward_shapes_and_batch_stats(name, shape):
  model = models.get_model(name, num_classes=7)
  variables, x = _init(model, shape)

  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()

  logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (2, 7) and np.isfinite(logits).all()
  old, new = jax.tree.leaves(variables['batch_stats']), jax.tree.leaves(updates['batch_stats'])
  assert len(old) == len(new) > 0
  assert all(not np.allclose(a, b) for a, b in zip(old, new))


@pytest.mark.parametrize('name', ['cnn', 'resnet', 'rir'])
def test_default_models_are_parameter_matched(name):
  assert 260_000 <= _param_count(name) <= 280_000


@pytest.mark.parametrize('shortcut', ['zero_pad', 'projection'])
def test_resnet20_parameter_count(shortcut):
  assert 260_000 <= _param_count('resnet', depth=20, shortcut=shortcut) <= 280_000


def test_rir_paper_parameter_count():
  assert abs(_param_count('rir_paper') - 9.47e6) <= 0.015 * 9.47e6


def test_resnet_init_has_the_parameters_of_rir():
  kwargs = dict(widths=(4, 8), blocks_per_stage=(1, 2))
  assert _param_count('resnet_init', **kwargs) == _param_count('rir', **kwargs)


@pytest.mark.parametrize('name', ['cnn', 'resnet', 'rir'])
def test_bfloat16_compute_keeps_float32_params(name):
  model = models.get_model(name, num_classes=10, dtype=jnp.bfloat16)
  variables, x = _init(model, CIFAR)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  logits = model.apply(variables, x, train=False)
  assert logits.dtype == jnp.float32 and np.isfinite(logits).all()


def test_unknown_model_name_lists_the_names():
  with pytest.raises(ValueError) as error:
    models.get_model('vgg', num_classes=10)
  assert str(error.value) == ("unknown model 'vgg'; choose one of: "
                              "cnn, resnet, rir, resnet_init, rir_paper")
  assert models.MODEL_NAMES == ('cnn', 'resnet', 'rir', 'resnet_init', 'rir_paper')


def test_bad_arguments_are_named_in_one_line():
  with pytest.raises(TypeError, match='dropout') as error:
    models.get_model('resnet', num_classes=10, dropout=0.5)
  assert '\n' not in str(error.value)
  with pytest.raises(TypeError, match='single_conv'):  # a preset's fixed argument
    models.get_model('resnet_init', num_classes=10, single_conv=False)
  with pytest.raises(ValueError, match='6n\\+2'):
    models.get_model('resnet', num_classes=10, depth=21)
  with pytest.raises(ValueError, match="shortcut 'option_c'"):
    models.get_model('rir', num_classes=10, shortcut='option_c')


def _imported(node: ast.AST) -> list[str]:
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  if isinstance(node, ast.ImportFrom):
    return [node.module or '', *(f'{node.module}.{alias.name}' for alias in node.names)]
  return []


def test_models_import_nothing_of_the_kernels():
  """The models build on the modules they are given (rir_jax.kernels.select picks them)."""
  for path in sorted(pathlib.Path(models.__file__).parent.glob('*.py')):
    imported = [name for node in ast.walk(ast.parse(path.read_text()))
                for name in _imported(node)]
    assert imported and not [n for n in imported if n.startswith('rir_jax.kernels')], path


# --- Eq. 1 ----------------------------------------------------------------------------

def _block_inputs(channels=4, seed=0):
  r_key, t_key = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(r_key, (3, 6, 6, channels)),
          jax.random.normal(t_key, (3, 6, 6, channels)))


def _batch_norm(z, scale, bias):
  """Training-mode batch norm with the batch's own statistics, written out by hand."""
  mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
  return (z - mean) / jnp.sqrt(var + BN_EPSILON) * scale + bias


def _conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _block_variables(block, r, t, seed=0):
  variables = block.init(jax.random.key(seed), r, t, train=False)
  return _random_variables(variables, seed + 1)


def test_generalized_block_without_cross_and_transient_kernels_is_a_resnet_block():
  block = models.GeneralizedResidualBlock(4)
  r, t = _block_inputs()
  variables = _block_variables(block, r, t)
  params = variables['params']
  for name in ('kernel_tr', 'kernel_rt', 'kernel_tt'):
    params[name] = jnp.zeros_like(params[name])
  (r_out, _), _ = block.apply(variables, r, t, train=True, mutable=['batch_stats'])

  bn = params['bn_r']
  expected = jax.nn.relu(_batch_norm(_conv(r, params['kernel_rr']) + r,
                                     bn['scale'], bn['bias']))
  np.testing.assert_allclose(r_out, expected, atol=1e-5)


def test_generalized_block_without_residual_stream_is_a_plain_layer():
  block = models.GeneralizedResidualBlock(4)
  r, t = _block_inputs()
  variables = _block_variables(block, r, t)
  (_, t_out), _ = block.apply(variables, jnp.zeros_like(r), t, train=True,
                              mutable=['batch_stats'])
  params = variables['params']
  expected = jax.nn.relu(_batch_norm(_conv(t, params['kernel_tt']),
                                     params['bn_t']['scale'], params['bn_t']['bias']))
  np.testing.assert_allclose(t_out, expected, atol=1e-5)


@pytest.mark.parametrize('features,strides,shortcut', [
    (4, 1, 'projection'),  # identity: folded into the single kernel
    (6, 2, 'projection'),  # 1x1 projection kept beside the single conv
    (6, 2, 'zero_pad'),
])
@pytest.mark.parametrize('train', [False, True])
def test_generalized_block_equals_its_resnet_init_form(features, strides, shortcut, train):
  make = functools.partial(models.GeneralizedResidualBlock, features, strides, shortcut)
  r, t = _block_inputs()
  variables = _block_variables(make(), r, t)
  # Same parameter tree: rir variables are resnet_init variables, no renaming.
  assert (jax.tree.structure(variables) ==
          jax.tree.structure(make(single_conv=True).init(jax.random.key(0), r, t,
                                                         train=False)))

  def run(module):
    return module.apply(variables, r, t, train=train, mutable=['batch_stats'])[0]

  four_convs, one_conv = run(make()), run(make(single_conv=True))
  for separate, fused in zip(four_convs, one_conv):
    assert np.isfinite(separate).all()
    np.testing.assert_allclose(separate, fused, atol=1e-5)


def test_resnet_init_kernel_is_one_convolution_over_both_streams():
  r, t = _block_inputs()
  kernels = _randomize({n: jnp.zeros((3, 3, 4, 4)) for n in models.rir.KERNEL_NAMES}, 3)
  fused = _conv(jnp.concatenate([r, t], axis=-1),
                models.resnet_init_kernel(**kernels, add_identity=True))
  np.testing.assert_allclose(
      fused[..., :4],
      _conv(r, kernels['kernel_rr']) + _conv(t, kernels['kernel_tr']) + r, atol=1e-5)
  np.testing.assert_allclose(
      fused[..., 4:], _conv(r, kernels['kernel_rt']) + _conv(t, kernels['kernel_tt']),
      atol=1e-5)


def test_rir_and_resnet_init_models_compute_the_same_logits():
  kwargs = dict(num_classes=5, widths=(4, 6), blocks_per_stage=(1, 1))
  rir = models.get_model('rir', **kwargs)
  variables, x = _init(rir, MNIST)
  variables = _random_variables(variables, 4)
  logits = rir.apply(variables, x, train=False)
  assert np.isfinite(logits).all()
  np.testing.assert_allclose(
      logits, models.get_model('resnet_init', **kwargs).apply(variables, x, train=False),
      atol=1e-4)


@pytest.mark.parametrize('single_conv', [False, True])
def test_transient_stream_feeds_the_residual_stream(single_conv):
  block = models.GeneralizedResidualBlock(4, single_conv=single_conv)
  r, t = _block_inputs()
  variables = _block_variables(block, r, t)
  cotangent = jax.random.normal(jax.random.key(9), r.shape)

  def r_output(t):
    (r_out, _), _ = block.apply(variables, r, t, train=True, mutable=['batch_stats'])
    return jnp.sum(r_out * cotangent)

  grad = jax.grad(r_output)(t)
  assert np.isfinite(grad).all()
  # Every position of t reaches r' through W_tr; a block that ignored t gives exactly 0.
  assert np.mean(np.abs(grad) > 1e-6) > 0.5
