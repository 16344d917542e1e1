"""The train step and loop in-process: sharding equivalence, resume, NaN handling, optimizers."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from rir_jax import (checkpoint, checks, loop, metrics, optim, parallel, train,
                     trainer as trainer_lib)
from rir_jax.data import feeding
from rir_jax.kernels import conv, select


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = ml_collections.ConfigDict({"name": "cnn", "widths": (8, 16), "convs_per_stage": 1})
  config.data.name = "synthetic"
  config.batch_size = 16
  config.eval_batch_size = 400
  config.num_train_steps = 6
  config.schedule.name = "constant"
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 2
  for key, value in overrides.items():
    target = config
    *path, last = key.split(".")
    for part in path:
      target = target[part]
    target[last] = value
  return config


def run_steps(config, dataset, mesh, steps):
  plan = loop.make_plan(config, len(dataset.train_labels))
  trainer = trainer_lib.Trainer(config, dataset, plan, mesh=mesh)
  batches = feeding.train_batches(dataset.train_images, dataset.train_labels,
                                  global_batch=config.batch_size, seed=config.seed,
                                  mesh=trainer.mesh, chunks=[(s, 1) for s in range(steps)])
  for _, _, batch in batches:
    last = trainer.step(batch)
  return jax.device_get(trainer.state), jax.device_get(last)


def test_eight_devices_match_one_device(synthetic):
  assert jax.device_count() == 8
  config = tiny_config()
  one, m1 = run_steps(config, synthetic, parallel.make_mesh(jax.devices()[:1]), 3)
  eight, m8 = run_steps(config, synthetic, parallel.make_mesh(), 3)
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(one.batch_stats), jax.tree.leaves(eight.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_training_changes_params_and_lowers_loss(synthetic):
  config = tiny_config(**{"optimizer.learning_rate": 0.05})
  state, _ = run_steps(config, synthetic, parallel.make_mesh(), 1)
  fresh = jax.device_get(trainer_lib.Trainer(config, synthetic, loop.make_plan(config, 10000)).state)
  moved = [not np.array_equal(a, b) for a, b in
           zip(jax.tree.leaves(state.params), jax.tree.leaves(fresh.params))]
  assert all(moved)
  assert int(state.step) == 1


def test_resume_is_bit_identical(synthetic, tmp_path):
  straight = tiny_config()
  final_straight = loop.train_and_evaluate(straight, tmp_path / "a", synthetic)
  half = tiny_config(num_train_steps=3)
  loop.train_and_evaluate(half, tmp_path / "b", synthetic)
  final_resumed = loop.train_and_evaluate(straight, tmp_path / "b", synthetic)
  assert final_resumed == final_straight
  a = _restore(straight, synthetic, tmp_path / "a")
  b = _restore(straight, synthetic, tmp_path / "b")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  lines = metrics.read_metrics(tmp_path / "b" / "metrics.jsonl")
  evals = [l for l in lines if "eval/accuracy" in l]
  assert [l["step"] for l in evals] == [3, 6]
  assert evals[-1]["eval/examples"] == len(synthetic.test_labels)


def _restore(config, dataset, workdir):
  trainer = trainer_lib.Trainer(config, dataset, loop.make_plan(config, len(dataset.train_labels)))
  ckpts = checkpoint.Checkpoints(workdir / "checkpoints", keep=3)
  try:
    state = ckpts.restore_newest(trainer.state)
  finally:
    ckpts.close()
  assert int(state.step) == config.num_train_steps
  return jax.device_get(state)


def test_nonfinite_loss_stops_and_names_the_step(synthetic, tmp_path):
  config = tiny_config(**{"optimizer.learning_rate": 1e30})
  with pytest.raises(loop.NonFiniteLoss, match=r"at step \d+"):
    loop.train_and_evaluate(config, tmp_path / "w", synthetic)


def test_skip_step_policy_keeps_params_finite(synthetic, tmp_path):
  config = tiny_config(**{"optimizer.learning_rate": 1e30, "nan_policy": "skip_step"})
  loop.train_and_evaluate(config, tmp_path / "w", synthetic)
  lines = metrics.read_metrics(tmp_path / "w" / "metrics.jsonl")
  skipped = sum(l.get("train/nonfinite_steps", 0) for l in lines)
  assert skipped >= 1
  state = _restore(config, synthetic, tmp_path / "w")
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  assert int(state.skipped_steps) == skipped


def test_cross_entropy_is_softmax_once():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  expected = -jax.nn.log_softmax(logits)[0, 0]
  np.testing.assert_allclose(train.cross_entropy(logits, jnp.array([0]), 3)[0], expected,
                             rtol=1e-6)


def test_weight_decay_spares_batchnorm_and_biases():
  params = {"conv": {"kernel": jnp.ones((3, 3, 1, 1))}, "bn": {"scale": jnp.ones((1,))},
            "dense": {"bias": jnp.ones((2,))}}
  assert optim.decay_mask(params) == {"conv": {"kernel": True}, "bn": {"scale": False},
                                      "dense": {"bias": False}}


@pytest.mark.parametrize("kind", ["l2", "decoupled"])
def test_weight_decay_only_shrinks_masked_weights(kind):
  config = tiny_config(**{"optimizer.weight_decay": 0.1, "optimizer.weight_decay_type": kind,
                          "optimizer.momentum": 0.0})
  tx = optim.make_optimizer(config, optax.constant_schedule(1.0))
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_array_equal(updates["b"], np.zeros(2))


def test_piecewise_schedule_follows_epochs():
  config = tiny_config(**{"schedule.name": "piecewise", "schedule.boundaries_epochs": (2.0, 3.0)})
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=40)
  assert [float(schedule(s)) for s in (0, 19, 20, 29, 30)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001])


def test_warmup_then_cosine():
  config = tiny_config(**{"schedule.name": "cosine", "schedule.warmup_epochs": 1.0})
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=40)
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(0.1)
  assert float(schedule(40)) == pytest.approx(0.0, abs=1e-6)


def test_prefetched_batches_are_the_batches_of_their_steps(synthetic):
  mesh = parallel.make_mesh()
  kwargs = dict(global_batch=16, seed=3, mesh=mesh)
  chunks = [(5, 1), (6, 3), (9, 1), (10, 3)]  # several steps per dispatch come stacked
  fed = list(feeding.train_batches(synthetic.train_images, synthetic.train_labels,
                                   chunks=chunks, **kwargs))
  assert [(first, steps) for first, steps, _ in fed] == chunks
  for first, steps, batch in fed:
    assert batch["label"].shape == ((16,) if steps == 1 else (steps, 16))
    assert batch["image"].sharding.spec == (parallel.batch_sharded(mesh).spec if steps == 1
                                            else parallel.stacked_batches_sharded(mesh).spec)
    for i in range(steps):
      alone = feeding.train_batch(synthetic.train_images, synthetic.train_labels,
                                  step=first + i, **kwargs)
      for key in ("image", "label"):
        fed_rows = jax.device_get(batch[key])
        np.testing.assert_array_equal(fed_rows if steps == 1 else fed_rows[i],
                                      jax.device_get(alone[key]))
  steps = [jax.device_get(b["label"]) for b in (
      feeding.train_batch(synthetic.train_images, synthetic.train_labels, step=s, **kwargs)
      for s in (0, 1))]
  assert not np.array_equal(*steps)


@pytest.mark.parametrize("model", [
    {"name": "resnet", "depth": 8},
    {"name": "rir", "widths": (4, 8), "blocks_per_stage": (1, 1)},
])
def test_onednn_step_on_eight_devices_matches_xla_on_one(synthetic, model):
  """The oneDNN convolutions, sharded over the batch, train as XLA's do (bf16 too).

  One step: forward, backward, update and batch statistics, within ~1e-7 in f32. Later
  steps can jump apart (ResNet-8, XLA on 1 device against oneDNN on 8: step 1 within
  0.01 of the tolerance, step 2 at 20 times it; with flax's batch norm, XLA on 8 devices
  jumped from XLA on 1 likewise within 3 steps): a jump, not a drift, as when a ReLU
  input within rounding of zero goes one way in one run and the other in the other.
  """
  if not conv.is_available()[0]:
    pytest.skip(f"oneDNN unavailable: {conv.is_available()[1]}")
  for dtype, tol in (("float32", 1e-5), ("bfloat16", 2e-2)):
    config = tiny_config(model=ml_collections.ConfigDict(model), dtype=dtype,
                         kernels="xla")
    xla, mx = run_steps(config, synthetic, parallel.make_mesh(jax.devices()[:1]), 1)
    config.kernels = "cpu_library"
    onednn, mo = run_steps(config, synthetic, parallel.make_mesh(), 1)
    x = jnp.zeros((2, 32, 32, 3), getattr(jnp, dtype))
    variables = jax.device_get(xla)
    hlo = jax.jit(lambda x: trainer_lib.make_model(config, 10).apply(
        {"params": variables.params, "batch_stats": variables.batch_stats}, x,
        train=False)).lower(x).as_text()
    assert hlo.count("RirOnednnConvForward") >= 3  # every convolution, not just some
    assert "convolution" not in hlo
    np.testing.assert_allclose(mx["loss"], mo["loss"], rtol=tol)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(xla)[0],
                            jax.tree.leaves(onednn)):
      np.testing.assert_allclose(a, b, rtol=tol, atol=tol,
                                 err_msg=f"{dtype} {jax.tree_util.keystr(path)}")


def test_kernels_cpu_library_where_it_cannot_run_is_a_config_error(monkeypatch):
  monkeypatch.setattr(conv, "is_available", lambda: (False, "g++ not found"))
  config = tiny_config(kernels="cpu_library")
  with pytest.raises(checks.ConfigError, match="kernels=cpu_library cannot run here"):
    checks.validate(config, device_count=1, process_count=1)
  config.kernels = "auto"
  checks.validate(config, device_count=1, process_count=1)


def test_kernels_auto_takes_xla_off_the_cpu(monkeypatch, request):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  select.resolve.cache_clear()  # the choice is made once per process
  request.addfinalizer(select.resolve.cache_clear)
  assert select.cpu_library_usable() == (False, "the default backend is gpu, and the CPU "
                                              "library runs on CPUs only")
  assert select.resolve("auto") == "xla"
  with pytest.raises(RuntimeError, match="CPUs only"):
    select.conv_general_dilated_for("cpu_library")
