"""A global batch that the devices do not divide: padded rows that count nowhere.

8 fake devices must train what one device trains on the same batch (500, and an odd 37):
the same first-step loss, parameters within float32 noise, the same batch-norm
statistics, on XLA's sums and on the CPU kernels'. A padded example counted anywhere
moves the parameters far more than that noise: the comparison is shown to catch it.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import cifar, default, rir_cifar
from launch_helpers import (free_port, launch_command, max_abs_difference, read_checkpoint,
                            result_lines, write_tiny_config)
from rir_jax import checks, loop, parallel, train, trainer as trainer_lib
from rir_jax.data import augment, batching, feeding, loader
from rir_jax.kernels import batch_norm
from rir_jax.kernels.batch_norm import BatchNorm
from test_multihost import FOUR_DEVICES, TIMEOUT_S, Processes

# Across device counts a ReLU whose input lies within rounding of zero can flip, and
# every layer before it then moves by ~1e-3 of its update (DESIGN.md, section 7; 1.2e-3
# measured here between 1 and 2 unpadded devices). Past the last ReLU (the head) nothing
# flips: there the updates agree to ~1e-5. Counting the 4 padding rows of 504 moved some
# layer by >= 1.5e-2, and the head by >= 7e-4 (test_counting_the_padding_is_caught).
UPDATE_TOLERANCE = 5e-3
HEAD_TOLERANCE = 1e-4
THREE_DEVICES = "--xla_force_host_platform_device_count=3"
SIX_DEVICES = "--xla_force_host_platform_device_count=6"


@functools.cache
def _dataset():
  return loader.load_dataset("synthetic")  # random images, crop + flip: keys matter


def _config(batch_size: int, kernels: str) -> ml_collections.ConfigDict:
  config = default.get_config()
  # 16 and 32 channels: whole vectors for the batch-norm kernels.
  config.model = ml_collections.ConfigDict(
      {"name": "cnn", "widths": (16, 32), "convs_per_stage": 1})
  config.data.name = "synthetic"
  config.batch_size, config.num_train_steps = batch_size, 10
  config.schedule.name = "constant"
  config.kernels = kernels
  return config


@dataclasses.dataclass
class FirstStep:
  before: dict
  params: dict
  batch_stats: dict
  metrics: dict
  program: str


def _first_step(batch_size: int, kernels: str, devices: int) -> FirstStep:
  config, dataset = _config(batch_size, kernels), _dataset()
  mesh = parallel.make_mesh(jax.devices()[:devices])
  trainer = trainer_lib.Trainer(config, dataset, loop.make_plan(config, len(dataset.train_labels)),
                         mesh=mesh)
  before = jax.device_get(trainer.state.params)
  batch = feeding.train_batch(dataset.train_images, dataset.train_labels,
                              global_batch=batch_size, seed=config.seed, mesh=mesh, step=0)
  program = trainer.compile(batch).as_text()
  metrics = jax.device_get(trainer.step(batch))
  state = jax.device_get(trainer.state)
  return FirstStep(before, state.params, state.batch_stats, metrics, program)


@functools.cache
def _one_device(batch_size: int, kernels: str) -> FirstStep:
  return _first_step(batch_size, kernels, devices=1)


def _disagreements(reference: FirstStep, other: FirstStep) -> list[str]:
  """Parameters whose one-step updates differ by more than float32 noise."""
  found = []
  leaves = jax.tree_util.tree_leaves_with_path(reference.before)
  for (path, before), a, b in zip(leaves, jax.tree.leaves(reference.params),
                                  jax.tree.leaves(other.params)):
    name = jax.tree_util.keystr(path)
    relative = np.abs(b - a).max() / max(np.abs(a - before).max(), 1e-30)
    if relative > (HEAD_TOLERANCE if "head" in name else UPDATE_TOLERANCE):
      found.append(f"{name}: {relative:.2g}")
  return found


def _need_library(kernels, request):
  if kernels == "cpu_library":
    request.getfixturevalue("cpu_kernel_library")


@pytest.mark.parametrize("kernels", ["xla", "cpu_library"])
@pytest.mark.parametrize("batch_size", [500, 37])
def test_eight_devices_train_what_one_device_trains(batch_size, kernels, request):
  _need_library(kernels, request)
  one, eight = _one_device(batch_size, kernels), _first_step(batch_size, kernels, 8)
  assert abs(eight.metrics["loss"] - one.metrics["loss"]) <= 1e-6
  assert eight.metrics["accuracy"] == pytest.approx(one.metrics["accuracy"], abs=1e-6)
  assert _disagreements(one, eight) == []
  for a, b in zip(jax.tree.leaves(one.batch_stats), jax.tree.leaves(eight.batch_stats)):
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
  if kernels == "cpu_library":  # the padded statistics ran on the weighted kernel
    assert "RirBatchNormWeightedStats" in eight.program
    assert "RirBatchNormWeightedStats" not in one.program


def _count_padding_in_loss(monkeypatch):
  monkeypatch.setattr(train, "_mean", lambda values, mask: jnp.mean(values))


def _count_padding_in_batch_norm(monkeypatch):
  unmasked = batch_norm.batch_norm_train
  monkeypatch.setattr(batch_norm, "batch_norm_train",
                      lambda *args, mask=None, **kwargs: unmasked(*args, **kwargs))


@pytest.mark.parametrize("count_padding", [_count_padding_in_loss, _count_padding_in_batch_norm])
def test_counting_the_padding_is_caught(count_padding, monkeypatch):
  one = _one_device(500, "xla")
  count_padding(monkeypatch)
  assert _disagreements(one, _first_step(500, "xla", 8)) != []


def _padded(x, rows):
  """x with `rows` padding rows far from its values: counted anywhere, they show."""
  return jnp.concatenate([x, 50.0 + 30.0 * jnp.ones((rows, *x.shape[1:]), x.dtype)])


@pytest.mark.parametrize("kernels", ["xla", "cpu_library"])
def test_batch_norm_leaves_masked_examples_out_of_statistics_and_gradients(kernels, request):
  _need_library(kernels, request)
  x = jax.random.normal(jax.random.key(0), (6, 5, 4, 16)) * jnp.arange(1, 17) + 0.7
  cotangent = jax.random.normal(jax.random.key(1), x.shape)
  padded, mask = _padded(x, 2), jnp.arange(8) < 6
  module = BatchNorm(use_running_average=False, momentum=0.9, relu=True,
                     kernel_sums=kernels == "cpu_library")
  variables = module.init(jax.random.key(2), x)

  def run(inputs, params, mask=None):
    y, updated = module.apply({**variables, "params": params}, inputs, mask=mask,
                              mutable=["batch_stats"])
    return jnp.sum(y[:6] * cotangent), (y[:6], updated["batch_stats"])

  grad = jax.grad(run, argnums=(0, 1), has_aux=True)
  (dx, dparams), (y, stats) = grad(x, variables["params"])
  (dx_padded, dparams_padded), (y_padded, stats_padded) = grad(padded, variables["params"], mask)
  np.testing.assert_allclose(y_padded, y, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_padded)):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(dx_padded[:6], dx, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(dx_padded[6:], 0)
  for a, b in zip(jax.tree.leaves(dparams), jax.tree.leaves(dparams_padded)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
  program = str(jax.make_jaxpr(grad)(padded, variables["params"], mask))
  assert ("RirBatchNormWeightedStats" in program) == (kernels == "cpu_library")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_weighted_stats_kernel_weights_each_example(dtype, cpu_kernel_library):
  """More rows than a chunk of 512, and channels past the last whole vector of 16."""
  x = jax.random.normal(jax.random.key(0), (7, 9, 10, 20)).astype(dtype)
  weights = jnp.asarray([1, 0, 1, 1, 0.5, 1, 0], jnp.float32)
  sums = jax.jit(batch_norm.stats)(x, weights)
  rows = np.asarray(x, np.float64) * np.asarray(weights)[:, None, None, None]
  expected = [rows.sum((0, 1, 2)), (rows * np.asarray(x, np.float64)).sum((0, 1, 2))]
  np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=1e-4)


def test_padding_sits_at_the_end_and_every_process_feeds_the_same_rows():
  rows = batching.padded_size(37, 8)
  assert (rows, batching.padded_size(500, 8), batching.padded_size(48, 8)) == (40, 504, 48)
  slices = [batching.batch_rows(37, rows, process_index=p, process_count=2) for p in range(2)]
  positions, mask = (np.concatenate(parts) for parts in zip(*slices))
  np.testing.assert_array_equal(mask, np.arange(40) < 37)
  np.testing.assert_array_equal(positions[:37], np.arange(37))
  unpadded = batching.train_batch_indices(1000, 37, seed=1, step=30)
  fed = np.concatenate([batching.train_batch_indices(1000, 37, seed=1, step=30, padded_batch=40,
                                                     process_index=p, process_count=2)
                        for p in range(2)])
  np.testing.assert_array_equal(fed[:37], unpadded)
  assert set(fed[37:]) <= set(unpadded)  # padding repeats an example of the batch


def test_eval_batches_are_padded_alike_and_count_every_example_once():
  counts = np.zeros(10, np.int64)
  for process in range(2):
    for indices, mask in batching.eval_batches(10, 3, padded_batch=4, process_index=process,
                                               process_count=2):
      assert indices.shape == mask.shape == (2,)
      np.add.at(counts, indices[mask], 1)
  np.testing.assert_array_equal(counts, 1)


@pytest.mark.parametrize("partitionable", [True, False])
def test_padding_leaves_each_example_s_augmentation_as_it_was(partitionable):
  images = jax.random.randint(jax.random.key(0), (37, 8, 8, 3), 0, 256).astype(jnp.uint8)
  key = jax.random.fold_in(jax.random.PRNGKey(0), 3)  # as train.train_step keys step 3
  with jax.threefry_partitionable(partitionable):  # both ways of drawing a key's splits
    alone = augment.augment(images, key, "crop_flip")
    padded = augment.augment(_padded(images, 3), key, "crop_flip", num_examples=37)
  np.testing.assert_array_equal(padded[:37], alone)


# (16, 4): a v4-32 slice, 16 chips on 4 hosts.
@pytest.mark.parametrize("devices, processes", [(8, 1), (16, 2), (16, 4), (32, 4)])
def test_the_paper_recipe_validates_on_any_device_count(devices, processes):
  for config in (rir_cifar.get_config(), rir_cifar.get_config("smoke"),
                 cifar.get_config("model=resnet")):
    checks.validate(config, device_count=devices, process_count=processes)


def test_processes_that_cannot_share_the_padded_rows_are_refused():
  with pytest.raises(checks.ConfigError, match="cannot share evenly"):
    checks.validate(rir_cifar.get_config(), device_count=6, process_count=4)


def _launch(procs, config_file, workdir, xla_flags, *flags):
  return procs.launch(launch_command(config_file, workdir, *flags),
                      workdir.parent / f"{workdir.name}.log", xla_flags)


def _pair(procs, config_file, workdir, *extra):
  """Two loopback processes of three fake devices each (DESIGN.md section 6's settings)."""
  port, flags = free_port(), f"{THREE_DEVICES} --xla_cpu_collective_timeout_seconds={TIMEOUT_S}"
  return [procs.launch(
      launch_command(config_file, workdir, f"--coordinator_address=127.0.0.1:{port}",
                     "--num_processes=2", f"--process_id={i}",
                     f"--distributed_timeout={TIMEOUT_S}", *extra),
      workdir.parent / f"{workdir.name}.p{i}.log", flags) for i in range(2)]


@pytest.mark.slow
def test_two_processes_of_three_devices_train_what_one_of_six_trains(tmp_path):
  """Batch 16 and eval batch 128 on 6 devices: 18 and 132 rows, each process feeding half.

  1 x 6 pads alike, so it checks the processes' slices; 1 x 4 pads nothing, so its
  first logged loss (steps 1-2) checks that the padding counts nowhere. The two 6-device
  layouts sum across devices in different orders, so they are compared tightly at the
  first checkpoint and within a ReLU flip's reach at the last (on one CPU they drifted
  from 1.2e-7 at step 8 to 6.3e-5 at step 12).
  """
  tiny, procs = write_tiny_config(tmp_path), Processes()
  keep_all = "--config.keep_checkpoints=6"
  try:
    runs = {"pair": _pair(procs, tiny, tmp_path / "pair", keep_all),
            "six": [_launch(procs, tiny, tmp_path / "six", SIX_DEVICES, keep_all)],
            "four": [_launch(procs, tiny, tmp_path / "four", FOUR_DEVICES,
                             "--config.num_train_steps=2")]}
    for name, started in runs.items():
      for i, proc in enumerate(started):
        log = tmp_path / (f"{name}.p{i}.log" if name == "pair" else f"{name}.log")
        assert proc.wait() == 0, log.read_text()[-3000:]
  finally:
    procs.kill_all()
  assert "batch_size 16 is fed as 18 rows over 6 devices" in (tmp_path / "pair.p0.log").read_text()
  for step, tolerance in ((2, 1e-6), (12, UPDATE_TOLERANCE)):
    difference = max_abs_difference(read_checkpoint(tmp_path / "pair", step)["params"],
                                    read_checkpoint(tmp_path / "six", step)["params"])
    print(f"step {step}: max |params(2 processes x 3 devices) - params(1 x 6)| = "
          f"{difference:.3g}")
    assert difference <= tolerance
  (pair_train, pair_eval), (six_train, six_eval) = (result_lines(tmp_path / "pair"),
                                                    result_lines(tmp_path / "six"))
  assert [line[0] for line in pair_train] == [line[0] for line in six_train]
  for a, b in zip(pair_eval, six_eval, strict=True):
    assert a[1] == pytest.approx(b[1], abs=1e-5) and a[3] == b[3] == 512
  four_train = result_lines(tmp_path / "four")[0]
  assert pair_train[0][0] == four_train[0][0] == 2
  assert pair_train[0][1] == pytest.approx(four_train[0][1], abs=1e-5)
