"""The oneDNN convolution against XLA's: values, gradients, fallbacks, sharding."""
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rir_jax.kernels import conv as onednn, select

DN = ("NHWC", "HWIO", "NHWC")
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


pytestmark = pytest.mark.usefixtures("cpu_kernel_library")


def assert_close(actual, expected, tolerance):
  """Relative to the largest entry: entries near zero carry the sum's rounding."""
  actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
  assert actual.shape == expected.shape
  scale = max(float(np.max(np.abs(expected))), 1e-30)
  assert float(np.max(np.abs(actual - expected))) <= tolerance * scale


def loss_and_grads(conv, strides, padding):
  """jit(value_and_grad) of a loss whose gradients reach every output entry."""
  def loss(x, w, r):
    y = conv(x, w, strides, padding, dimension_numbers=DN)
    return jnp.sum(y.astype(jnp.float32) * r), y
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


def normal(shape, dtype=jnp.float32, seed=0):
  # NumPy's generator: jax.random's would compile once per shape, slowly.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def random_operands(x_shape, w_shape, dtype, strides, padding):
  x, w = normal(x_shape, dtype, 1), normal(w_shape, dtype, 2)
  out = jax.eval_shape(lambda: lax.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=DN)).shape
  return x, w, normal(out, seed=3)


CASES = [  # (x shape, w shape, strides, padding)
    ((2, 9, 9, 3), (3, 3, 3, 5), (1, 1), "SAME"),
    ((2, 9, 9, 3), (3, 3, 3, 5), (2, 2), "SAME"),
    ((2, 8, 8, 4), (3, 3, 4, 6), (2, 2), "SAME"),  # pads (0, 1)
    ((3, 7, 5, 4), (3, 3, 4, 2), (1, 1), "VALID"),
    ((3, 7, 5, 4), (3, 3, 4, 2), (2, 2), "VALID"),  # leaves a row unread
    ((2, 9, 7, 5), (1, 1, 5, 8), (2, 2), "VALID"),
    ((2, 9, 9, 3), (1, 1, 3, 4), (1, 1), ((0, 0), (0, 0))),
    ((2, 8, 8, 4), (1, 1, 4, 8), (2, 2), "VALID"),  # channels not a multiple of 8
    ((2, 9, 8, 3), (1, 1, 3, 5), (2, 3), ((1, 0), (2, 1))),
    ((2, 9, 9, 3), (3, 3, 3, 4), (2, 1), ((1, 2), (0, 1))),
    ((2, 7, 9, 3), (3, 3, 3, 4), (1, 2), ((2, 0), (1, 1))),
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("x_shape,w_shape,strides,padding", CASES)
def test_matches_xla(x_shape, w_shape, strides, padding, dtype):
  x, w, r = random_operands(x_shape, w_shape, dtype, strides, padding)
  (_, y), grads = loss_and_grads(onednn.conv_general_dilated, strides, padding)(x, w, r)
  (_, y_ref), grads_ref = loss_and_grads(lax.conv_general_dilated, strides, padding)(x, w, r)
  assert y.dtype == y_ref.dtype and grads[1].dtype == grads_ref[1].dtype
  for actual, expected in zip((y, *grads), (y_ref, *grads_ref)):
    assert_close(actual, expected, TOLERANCE[dtype])


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_kernels_runs_in_f32(monkeypatch, caplog, native):
  """Where oneDNN has no bf16 convolutions (no AVX-512: it cannot even build them), bf16
  runs on its f32 kernels with bf16 results and gradients; where it has them, natively."""
  from rir_jax.kernels import build  # pylint: disable=import-outside-toplevel
  if native and not build.bf16_convolutions():
    pytest.skip("this CPU has no bf16 convolutions in oneDNN")
  monkeypatch.setattr(build, "bf16_convolutions", lambda: native)
  onednn._warn_widened.cache_clear()  # pylint: disable=protected-access
  x_shape, w_shape, strides, padding = CASES[2]
  x, w, r = random_operands(x_shape, w_shape, jnp.bfloat16, strides, padding)
  step = loss_and_grads(onednn.conv_general_dilated, strides, padding)
  with caplog.at_level(logging.WARNING):
    hlo = step.lower(x, w, r).as_text()
    (_, y), grads = step(x, w, r)
  (_, y_ref), grads_ref = loss_and_grads(lax.conv_general_dilated, strides, padding)(x, w, r)
  calls = [line for line in hlo.splitlines() if "RirOnednnConv" in line and "call" in line]
  assert len(calls) == 3  # forward and both gradients
  forward = next(line for line in calls if "Forward" in line)
  assert forward.endswith("-> tensor<2x4x4x6xbf16>" if native else "-> tensor<2x4x4x6xf32>")
  assert ("no bf16 convolutions" in caplog.text) != native
  assert y.dtype == grads[0].dtype == grads[1].dtype == jnp.bfloat16
  for actual, expected in zip((y, *grads), (y_ref, *grads_ref)):
    assert_close(actual, expected, TOLERANCE[jnp.bfloat16])


@pytest.mark.parametrize("w_shape,kwargs", [
    ((3, 3, 6, 6), dict(rhs_dilation=(2, 2))),
    ((3, 3, 6, 6), dict(lhs_dilation=(2, 1), padding=((1, 1), (1, 1)))),
    ((3, 3, 2, 6), dict(feature_group_count=3)),
    ((6, 6, 3, 3), dict(dimension_numbers=("NCHW", "OIHW", "NCHW"))),
    ((3, 3, 6, 6), dict(dtype=jnp.float16)),
    ((3, 3, 6, 6), dict(padding=((-1, 1), (1, 1)))),
])
def test_falls_back_to_xla(w_shape, kwargs):
  """What oneDNN does not take runs on XLA, with XLA's result."""
  kwargs = dict(dict(padding="SAME", dimension_numbers=DN, dtype=jnp.float32), **kwargs)
  dtype, padding = kwargs.pop("dtype"), kwargs.pop("padding")
  x, w = jnp.ones((2, 6, 6, 6), dtype), jnp.ones(w_shape, dtype)
  conv = lambda fn: fn(x, w, (1, 1), padding, **kwargs)
  assert "RirOnednn" not in jax.jit(lambda: conv(onednn.conv_general_dilated)).lower().as_text()
  np.testing.assert_array_equal(conv(onednn.conv_general_dilated), conv(lax.conv_general_dilated))


def test_flax_conv():
  """nn.Conv with `conv_general_dilated=` has the same params, outputs and grads."""
  x = normal((2, 9, 9, 3))
  make = lambda fn: nn.Conv(4, (3, 3), strides=2, padding=1, conv_general_dilated=fn)
  onednn_conv, xla_conv = make(select.conv_general_dilated_for("cpu_library")), make(None)
  params = xla_conv.init(jax.random.key(1), x)
  assert jax.tree.structure(onednn_conv.init(jax.random.key(1), x)) == jax.tree.structure(params)
  grad = lambda module: jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(module.apply(p, x)))))
  for actual, expected in zip(jax.tree.leaves(grad(onednn_conv)(params)),
                              jax.tree.leaves(grad(xla_conv)(params))):
    assert_close(actual, expected, 1e-5)
  assert_close(onednn_conv.apply(params, x), xla_conv.apply(params, x), 1e-5)


def test_vmap():
  """Under vmap each mapped element is one call: still XLA's result."""
  xs, ws = normal((3, 2, 7, 7, 3), seed=1), normal((3, 3, 3, 3, 4), seed=2)
  def grads(fn):
    loss = lambda x, w: jnp.sum(jnp.sin(fn(x, w, (2, 2), "SAME", dimension_numbers=DN)))
    return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(xs, ws)
  for actual, expected in zip(grads(onednn.conv_general_dilated),
                              grads(lax.conv_general_dilated)):
    assert_close(actual, expected, 1e-5)


def test_selection(monkeypatch, caplog, request):
  assert select.conv_general_dilated_for("xla") is lax.conv_general_dilated
  assert select.conv_general_dilated_for("cpu_library") is onednn.conv_general_dilated
  assert select.conv_general_dilated_for("auto") is onednn.conv_general_dilated
  with pytest.raises(ValueError, match="unknown kernels"):
    select.conv_general_dilated_for("cudnn")
  monkeypatch.setattr(onednn, "is_available", lambda: (False, "no g++ here"))
  select.resolve.cache_clear()  # the choice is made once per process
  request.addfinalizer(select.resolve.cache_clear)
  with pytest.raises(RuntimeError, match="no g\\+\\+ here"):
    select.conv_general_dilated_for("cpu_library")
  with caplog.at_level(logging.INFO):
    assert select.conv_general_dilated_for("auto") is lax.conv_general_dilated
  assert "no g++ here" in caplog.text


def test_sharded_batch():
  """A batch split over the 8-device mesh stays split: no gather, dw summed."""
  mesh = Mesh(jax.devices(), ("data",))
  split, whole = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
  x, w, r = random_operands((16, 9, 9, 3), (3, 3, 3, 4), jnp.float32, (2, 2), "SAME")
  x, r, w = jax.device_put(x, split), jax.device_put(r, split), jax.device_put(w, whole)
  step = lambda fn: loss_and_grads(fn, (2, 2), "SAME")
  (loss, _), (dx, dw) = step(onednn.conv_general_dilated)(x, w, r)
  (loss_ref, _), (dx_ref, dw_ref) = step(lax.conv_general_dilated)(x, w, r)
  assert_close(loss, loss_ref, 1e-5)
  assert_close(dx, dx_ref, 1e-5)
  assert_close(dw, dw_ref, 1e-5)
  assert dx.sharding.is_equivalent_to(split, dx.ndim)
  hlo = step(onednn.conv_general_dilated).lower(x, w, r).compile().as_text()
  assert "RirOnednnConvBackwardWeights" in hlo
  # The devices' weight gradients are gathered (8 x dw) to be added in a fixed order;
  # nothing else is: no activation leaves its device.
  gathers = [line for line in hlo.splitlines() if " all-gather(" in line]
  assert gathers and all("f32[8,3,3,3,4]" in line for line in gathers), gathers


def test_uneven_batch_split():
  """A slice of a split batch splits unevenly: its padding must not reach dw."""
  mesh = Mesh(jax.devices(), ("data",))
  x = jax.device_put(normal((16, 6, 6, 3)), NamedSharding(mesh, PartitionSpec("data")))
  w = normal((3, 3, 3, 4), seed=1)
  def grads(fn):
    conv = lambda x, w: fn(jnp.cos(x[:12]), w, (1, 1), "SAME", dimension_numbers=DN)
    return jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), argnums=(0, 1)))(x, w)
  for actual, expected in zip(grads(onednn.conv_general_dilated), grads(lax.conv_general_dilated)):
    assert_close(actual, expected, 1e-5)


def test_shard_map_falls_back_to_xla():
  """Inside shard_map the results would lack their manual-axis types: XLA runs."""
  mesh = Mesh(jax.devices(), ("data",))
  x, w = normal((16, 5, 5, 3)), normal((3, 3, 3, 4), seed=1)
  def grads(fn):
    per_shard = lambda x, w: fn(x, w, (1, 1), "SAME", dimension_numbers=DN)
    conv = jax.shard_map(per_shard, mesh=mesh, in_specs=(PartitionSpec("data"), PartitionSpec()),
                         out_specs=PartitionSpec("data"))
    return jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), argnums=(0, 1)))(x, w)
  for actual, expected in zip(grads(onednn.conv_general_dilated), grads(lax.conv_general_dilated)):
    assert_close(actual, expected, 1e-6)
