"""Device-side augmentation and normalization, for use inside jit on the global batch.

Augment uint8 images first, then normalize: the crop's zero padding is then
black, as in the reference CIFAR implementations (pad 4 with zeros, random
crop back to size, random horizontal flip).
"""
import jax
import jax.numpy as jnp

from rir_jax.data.errors import DataError

AUGMENTATIONS = ('crop_flip', 'none')
CROP_PADDING = 4


def augment(images: jax.Array, key: jax.Array, kind: str,
            num_examples: int | None = None) -> jax.Array:
  """Augments a batch of NHWC images (uint8 or float); same shape and dtype out.

  Args:
    images: the batch, NHWC.
    key: a PRNG key; the same key gives the same result.
    kind: "crop_flip" (pad 4 with zeros, random crop of the input's size, random
      horizontal flip, independently per example) or "none".
    num_examples: where only the first `num_examples` rows are examples and the
      rest padding: those rows are augmented exactly as a batch of them alone
      would be (default: every row is an example).

  Returns:
    The augmented batch.
  """
  if kind == 'none':
    return images
  if kind != 'crop_flip':
    raise DataError(f'unknown augmentation {kind!r}; choose one of: {", ".join(AUGMENTATIONS)}')
  keys = _shard_like_batch(_example_keys(key, images.shape[0], num_examples), images)
  return jax.vmap(_crop_flip)(images, keys)


def _example_keys(key: jax.Array, rows: int, num_examples: int | None) -> jax.Array:
  """One key per row: the split of `key` into `num_examples`, then copies of the first
  for padding rows (splitting into `rows` would change every example's key)."""
  if num_examples is None or num_examples == rows:
    return jax.random.split(key, rows)
  keys = jax.random.split(key, num_examples)
  return jnp.concatenate([keys, jnp.repeat(keys[:1], rows - num_examples, axis=0)])


def _shard_like_batch(keys: jax.Array, images: jax.Array) -> jax.Array:
  """Splits the per-example keys over devices the way the batch is split.

  Under explicit sharding (jax.make_mesh's default), vmap requires all mapped
  axes to be sharded alike; elsewhere the batch axis of the type is unsharded.
  """
  batch_sharding = jax.typeof(images).sharding
  if batch_sharding.spec[0] is None:
    return keys
  spec = jax.sharding.PartitionSpec(batch_sharding.spec[0])
  return jax.sharding.reshard(keys, batch_sharding.update(spec=spec))


def _crop_flip(image: jax.Array, key: jax.Array) -> jax.Array:
  """One HWC image: a random crop of the zero-padded image, flipped half the time."""
  crop_key, flip_key = jax.random.split(key)
  height, width, channels = image.shape
  padding = ((CROP_PADDING, CROP_PADDING), (CROP_PADDING, CROP_PADDING), (0, 0))
  padded = jnp.pad(image, padding)
  top, left = jax.random.randint(crop_key, (2,), 0, 2 * CROP_PADDING + 1)
  cropped = jax.lax.dynamic_slice(padded, (top, left, 0), (height, width, channels))
  return jnp.where(jax.random.bernoulli(flip_key), cropped[:, ::-1], cropped)


def normalize(images: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
  """(images / 255 - mean) / std, with mean and std per channel in [0, 1] units.

  `mean` and `std` are what `Dataset.mean` / `Dataset.std` hold: statistics of
  pixel / 255, so MNIST's are about 0.1307 and 0.3081.
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) / 255.0 - mean) / std).astype(dtype)
