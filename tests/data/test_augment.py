"""On-device augmentations: exact NumPy references, statistics, jit and 8-device sharding."""

import chex
import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxml.data import augment
from jaxml.errors import ConfigError

BATCH, HEIGHT, WIDTH, CHANNELS = 64, 8, 6, 3


def make_images(batch=BATCH, seed=0):
  return np.random.default_rng(seed).random((batch, HEIGHT, WIDTH, CHANNELS), dtype=np.float32)


def aug_config(crop_pad=0, flip=False, noise_std=0.0):
  return ml_collections.ConfigDict({"crop_pad": crop_pad, "flip": flip, "noise_std": noise_std})


@pytest.mark.parametrize("pad", [1, 3])
def test_random_crop_matches_numpy_reference(pad):
  images, key = make_images(), jax.random.key(1)
  offsets = np.asarray(augment.crop_offsets(key, BATCH, pad))
  assert offsets.min() >= 0 and offsets.max() <= 2 * pad
  assert len({tuple(o) for o in offsets}) > 1  # per example, not one shift for the batch
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # zeros
  expected = np.stack([p[r:r + HEIGHT, c:c + WIDTH] for p, (r, c) in zip(padded, offsets)])
  np.testing.assert_array_equal(augment.random_crop(key, images, pad), expected)


def test_random_crop_without_padding_is_identity():
  images = make_images()
  np.testing.assert_array_equal(augment.random_crop(jax.random.key(0), images, 0), images)


def test_random_flip_mirrors_exactly_the_masked_half():
  images, key = make_images(batch=512), jax.random.key(2)
  mask = np.asarray(augment.flip_mask(key, 512))
  out = np.asarray(augment.random_flip(key, images))
  np.testing.assert_array_equal(out[mask], images[mask][:, :, ::-1, :])
  np.testing.assert_array_equal(out[~mask], images[~mask])
  assert 0.4 < mask.mean() < 0.6  # 512 fair coins: std of the mean is 0.022


def test_gaussian_noise_has_requested_std():
  images = np.full((256, HEIGHT, WIDTH, CHANNELS), 0.5, np.float32)
  noise = np.asarray(augment.gaussian_noise(jax.random.key(3), images, 0.1)) - images
  assert abs(noise.mean()) < 0.005
  assert abs(noise.std() - 0.1) < 0.002  # ~37k samples: relative std error ~0.4%


def test_disabled_config_is_identity():
  images = make_images()
  for config in (aug_config(), ml_collections.ConfigDict()):
    np.testing.assert_array_equal(augment.augment(jax.random.key(4), images, config), images)


def test_augment_composes_crop_flip_noise_with_independent_keys():
  images, key = make_images(), jax.random.key(5)
  crop_key, flip_key, noise_key = jax.random.split(key, 3)
  expected = augment.random_crop(crop_key, images, 2)
  expected = augment.random_flip(flip_key, expected)
  expected = augment.gaussian_noise(noise_key, expected, 0.05)
  got = augment.augment(key, images, aug_config(crop_pad=2, flip=True, noise_std=0.05))
  np.testing.assert_array_equal(got, expected)
  # Turning noise off leaves what crop and flip drew unchanged.
  no_noise = augment.augment(key, images, aug_config(crop_pad=2, flip=True))
  np.testing.assert_array_equal(no_noise, augment.random_flip(
      flip_key, augment.random_crop(crop_key, images, 2)))


@pytest.mark.parametrize("field, value", [("crop_pad", -1), ("noise_std", -0.1)])
def test_negative_settings_are_config_errors(field, value):
  with pytest.raises(ConfigError, match=field):
    augment.augment(jax.random.key(0), make_images(), aug_config(**{field: value}))


def test_sharded_jit_equals_unsharded_and_traces_once():
  chex.clear_trace_counter()
  config = aug_config(crop_pad=2, flip=True, noise_std=0.1)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(key, images):
    return augment.augment(key, images, config)

  # A separate jit for the single-device reference: eager op-by-op results may differ by an
  # ulp from fused compiled ones, and sharding must not change even that.
  unsharded = jax.jit(lambda key, images: augment.augment(key, images, config))
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  for seed in range(3):  # new keys and new data, same shapes: no retrace
    key, images = jax.random.key(seed), make_images(seed=seed)
    sharded = jax.device_put(images, sharding)
    out = step(key, sharded)
    assert out.sharding.is_equivalent_to(sharding, out.ndim)
    single = jax.device_put(images, jax.devices()[0])
    np.testing.assert_array_equal(out, unsharded(key, single))


def test_sharded_augment_needs_no_collectives():
  # Per-example ops should stay on each device's shard; a collective would mean XLA
  # gathered the batch to crop it.
  config = aug_config(crop_pad=2, flip=True, noise_std=0.1)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  images = jax.device_put(make_images(), NamedSharding(mesh, P("data")))
  hlo = jax.jit(lambda k, x: augment.augment(k, x, config)).lower(
      jax.random.key(0), images).compile().as_text()
  for collective in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
    assert collective not in hlo
