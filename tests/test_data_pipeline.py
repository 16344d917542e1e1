"""Batch order (host, numpy), augmentation and normalization (device, jax), synthetic data."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launch_helpers import tiny_config
from rir_jax import data, loop, run, train, trainer
from rir_jax.data import augment
from rir_jax.data import batching

N, BATCH = 1000, 64  # 15 steps per epoch, 40 examples left out of each.


def test_steps_per_epoch_drops_the_remainder():
  assert batching.steps_per_epoch(N, BATCH) == 15
  assert batching.steps_per_epoch(50_000, 500) == 100


def test_a_batch_larger_than_the_training_split_is_refused_before_the_run(tiny, tmp_path,
                                                                           capsys):
  """What steps_per_epoch leaves to the run's checks: one line, exit 2, no workdir."""
  config = tiny_config(tiny, batch_size=10_001)  # synthetic: 10,000 training examples
  with pytest.raises(SystemExit) as exited:
    run.launch(config, tmp_path / 'w', distributed=run.Distributed(), jax_cache_dir='')
  assert exited.value.code == 2
  assert ('batch_size=10001 is larger than the 10000 training examples'
          in capsys.readouterr().err)
  assert not (tmp_path / 'w').exists()


def test_train_batches_are_a_pure_function_of_seed_and_step():
  first = [batching.train_batch_indices(N, BATCH, seed=3, step=s) for s in range(40)]
  again = [batching.train_batch_indices(N, BATCH, seed=3, step=s) for s in range(40)]
  other = [batching.train_batch_indices(N, BATCH, seed=4, step=s) for s in range(40)]
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert not any(np.array_equal(a, b) for a, b in zip(first, other))
  assert first[0].dtype == np.int64 and first[0].shape == (BATCH,)
  # Resuming at step 23 (epoch 1) in a fresh computation replays the same batch.
  batching._epoch_order.cache_clear()
  assert np.array_equal(batching.train_batch_indices(N, BATCH, seed=3, step=23), first[23])


def test_an_epoch_sees_each_example_at_most_once_and_epochs_differ():
  epochs = [np.concatenate([batching.train_batch_indices(N, BATCH, seed=0, step=e * 15 + s)
                            for s in range(15)]) for e in range(2)]
  for indices in epochs:
    assert len(np.unique(indices)) == len(indices) == 15 * BATCH
    assert indices.min() >= 0 and indices.max() < N
  assert not np.array_equal(epochs[0], epochs[1])


def test_process_slices_are_disjoint_and_make_up_the_global_batch():
  whole = batching.train_batch_indices(N, BATCH, seed=1, step=7)
  slices = [batching.train_batch_indices(N, BATCH, seed=1, step=7, process_index=p,
                                         process_count=4) for p in range(4)]
  assert all(s.shape == (BATCH // 4,) for s in slices)
  np.testing.assert_array_equal(np.concatenate(slices), whole)
  with pytest.raises(data.DataError, match='multiple of the number of processes'):
    batching.train_batch_indices(N, BATCH, seed=1, step=7, process_count=5)


@pytest.mark.parametrize('num_examples, global_batch, processes', [(1000, 64, 4), (10, 4, 2),
                                                                   (8, 8, 1), (5, 8, 8)])
def test_eval_batches_count_every_example_exactly_once(num_examples, global_batch, processes):
  per_process = [batching.eval_batches(num_examples, global_batch, process_index=p,
                                       process_count=processes) for p in range(processes)]
  counts = np.zeros(num_examples, np.int64)
  for batches in per_process:
    assert len(batches) == -(-num_examples // global_batch)
    for indices, mask in batches:
      assert indices.shape == mask.shape == (global_batch // processes,)
      assert mask.dtype == bool and indices.dtype == np.int64
      np.add.at(counts, indices[mask], 1)
      assert (indices[~mask] == 0).all()
  np.testing.assert_array_equal(counts, 1)
  # Within a step, processes' slices side by side are the global batch, in order.
  first_batch = np.concatenate([batches[0][0] for batches in per_process])
  expected = np.arange(global_batch)
  np.testing.assert_array_equal(first_batch, np.where(expected < num_examples, expected, 0))


def _step_key(step: int) -> jax.Array:
  """An augmentation key made as train.train_step makes its own: a run's key folded with
  the step (test_the_train_step_augments_with_its_rng_folded_with_the_step)."""
  return jax.random.fold_in(jax.random.PRNGKey(0), step)


def _images(batch=16, size=32, channels=3):
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.integers(1, 256, (batch, size, size, channels), dtype=np.uint8))


@functools.partial(jax.jit, static_argnums=2)
def _jit_augment(images, key, kind):
  return augment.augment(images, key, kind)


def test_augment_is_deterministic_per_key_and_keeps_shape_and_dtype():
  images = _images()
  key = _step_key(5)
  out = _jit_augment(images, key, 'crop_flip')
  assert out.shape == images.shape and out.dtype == images.dtype
  np.testing.assert_array_equal(out, _jit_augment(images, key, 'crop_flip'))
  assert not np.array_equal(out, _jit_augment(images, _step_key(6), 'crop_flip'))
  np.testing.assert_array_equal(_jit_augment(images, key, 'none'), images)
  floats = _jit_augment(images.astype(jnp.float32), key, 'crop_flip')
  np.testing.assert_array_equal(floats, out.astype(jnp.float32))


def test_crop_flip_is_a_shifted_maybe_flipped_window_of_the_zero_padded_image():
  images = _images(batch=64)
  out = np.asarray(_jit_augment(images, jax.random.PRNGKey(1), 'crop_flip'))
  padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)))
  shifts, flips = set(), 0
  for image, window_source in zip(out, padded):
    matches = [(top, left, flip) for top in range(9) for left in range(9) for flip in (0, 1)
               if np.array_equal(image, _window(window_source, top, left, flip))]
    assert len(matches) == 1, 'not a crop of the padded image'
    top, left, flip = matches[0]
    shifts.add((top, left))
    flips += flip
  assert len(shifts) > 10, 'crops do not vary'
  assert 10 < flips < 54, 'flips are not about half'


def _window(padded, top, left, flip):
  window = padded[top:top + 32, left:left + 32]
  return window[:, ::-1] if flip else window


def test_the_train_step_augments_with_its_rng_folded_with_the_step(tiny, synthetic):
  """Under jit (the step traced), a train step is the step on its batch augmented beforehand
  with the key fold_in(state.rng, step): no other key, and a new one each step."""
  config = tiny_config(tiny)
  plan = loop.make_plan(config, len(synthetic.train_labels))
  crop = trainer.make_step_config(config, synthetic, plan, device_count=1)
  steps = {cfg.augmentation: jax.jit(functools.partial(train.train_step, cfg=cfg))
           for cfg in (crop, dataclasses.replace(crop, augmentation='none'))}
  state = train.create_train_state(crop, config.seed, synthetic.train_images.shape[1:])
  batch = {'image': jnp.asarray(synthetic.train_images[:config.batch_size]),
           'label': jnp.asarray(synthetic.train_labels[:config.batch_size])}

  def loss(kind, step, images):
    at_step = state.replace(step=jnp.asarray(step, jnp.int32))
    return float(steps[kind](at_step, {**batch, 'image': images})[1]['loss'])

  for step in (3, 4):
    key = jax.random.fold_in(state.rng, step)
    augmented = augment.augment(batch['image'], key, 'crop_flip')
    assert loss('crop_flip', step, batch['image']) == loss('none', step, augmented)
  assert loss('crop_flip', 3, batch['image']) != loss('crop_flip', 4, batch['image'])


def test_unknown_augmentation_is_refused():
  with pytest.raises(data.DataError, match='crop_flip, none'):
    augment.augment(_images(), jax.random.PRNGKey(0), 'cutout')


def test_normalize_uses_statistics_in_unit_range():
  images = jnp.asarray([[[[0, 255, 51]]]], jnp.uint8)
  mean, std = np.array([0.0, 0.5, 0.2]), np.array([1.0, 0.5, 0.1])
  out = augment.normalize(images, mean, std)
  np.testing.assert_allclose(out[0, 0, 0], [0.0, 1.0, 0.0], atol=1e-6)
  assert out.dtype == jnp.float32
  assert augment.normalize(images, mean, std, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_synthetic_dataset_needs_no_preparation():
  dataset = data.load_dataset('synthetic')
  assert dataset.train_images.shape == (10_000, 32, 32, 3)
  assert dataset.test_images.shape == (512, 32, 32, 3)
  assert (dataset.num_classes, dataset.augmentation) == (10, 'crop_flip')
  assert 'synthetic' in dataset.description
  np.testing.assert_array_equal(data.load('synthetic', 'test')[0], dataset.test_images)


@pytest.mark.parametrize('axis_type', [jax.sharding.AxisType.Explicit, jax.sharding.AxisType.Auto])
def test_augment_gives_the_same_result_on_a_batch_sharded_over_devices(axis_type):
  mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(axis_type,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  images = _images(batch=2 * jax.device_count())
  key = _step_key(1)
  sharded = _jit_augment(jax.device_put(images, sharding), key, 'crop_flip')
  np.testing.assert_array_equal(sharded, _jit_augment(images, key, 'crop_flip'))
