"""On-device augmentations: exact NumPy references, statistics, jit and 8-device sharding."""

import colorsys

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


def aug_config(crop_pad=0, flip=False, noise_std=0.0, **contrastive):
  """The original three fields; `color_jitter` / `erase_prob` only when passed."""
  return ml_collections.ConfigDict({"crop_pad": crop_pad, "flip": flip, "noise_std": noise_std,
                                    **contrastive})


CONTRASTIVE = dict(crop_pad=2, flip=True, noise_std=0.05, color_jitter=0.5, erase_prob=0.5)


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


def numpy_color_jitter(images, factors):
  """Reference: torchvision's ColorJitter steps in a fixed order, hue via colorsys."""
  out = images.astype(np.float64)
  luma = (lambda x: x) if images.shape[-1] == 1 else (
      lambda x: (x @ np.array([0.299, 0.587, 0.114]))[..., None])
  for image, (brightness, contrast, saturation, hue) in zip(out, factors.astype(np.float64)):
    image[:] = np.clip(image * brightness, 0, 1)
    mean = luma(image).mean()
    image[:] = np.clip((image - mean) * contrast + mean, 0, 1)
    if image.shape[-1] == 3:
      gray = luma(image)
      image[:] = np.clip((image - gray) * saturation + gray, 0, 1)
      for pixel in image.reshape(-1, 3):
        h, s, v = colorsys.rgb_to_hsv(*pixel)
        pixel[:] = colorsys.hsv_to_rgb((h + hue) % 1.0, s, v)
  return out


@pytest.mark.parametrize("channels", [3, 1])
def test_color_jitter_matches_numpy_reference(channels):
  images, key = make_images()[..., :channels], jax.random.key(6)
  images[:4] = images[:4, ..., :1]  # gray pixels: hue undefined, must stay gray
  factors = np.asarray(augment.jitter_factors(key, BATCH, 0.5))
  out = np.asarray(augment.color_jitter(key, images, 0.5))
  assert out.shape == images.shape and out.dtype == images.dtype
  assert out.min() >= 0 and out.max() <= 1
  assert np.abs(out - images).mean() > 0.01
  np.testing.assert_allclose(out, numpy_color_jitter(images, factors), atol=2e-6)


def test_one_channel_jitter_is_brightness_then_contrast_only():
  images, key = make_images()[..., :1], jax.random.key(7)
  b, c = np.asarray(augment.jitter_factors(key, BATCH, 1.0))[:, :2].T[..., None, None, None]
  expected = np.clip(images * b, 0, 1)
  mean = expected.mean(axis=(1, 2, 3), keepdims=True)
  expected = np.clip((expected - mean) * c + mean, 0, 1)
  np.testing.assert_allclose(augment.color_jitter(key, images, 1.0), expected, atol=1e-6)


def test_jitter_factors_follow_simclr_ranges_per_example():
  factors = np.asarray(augment.jitter_factors(jax.random.key(8), 4096, 0.5))
  low, high = factors.min(axis=0), factors.max(axis=0)
  np.testing.assert_allclose(low, [0.6, 0.6, 0.6, -0.1], atol=2e-3)
  np.testing.assert_allclose(high, [1.4, 1.4, 1.4, 0.1], atol=2e-3)
  # Brightness, contrast, saturation and hue drawn independently of each other.
  assert np.abs(np.corrcoef(factors.T) - np.eye(4)).max() < 0.1
  strong = np.asarray(augment.jitter_factors(jax.random.key(8), 512, 2.0))
  assert strong[:, :3].min() >= 0 and strong[:, 3].max() <= 0.5  # factors floor at 0


def test_color_jitter_keeps_range_for_strong_jitter_and_off_is_identity():
  images = make_images()
  out = np.asarray(augment.color_jitter(jax.random.key(9), images, 2.0))
  assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
  assert not np.array_equal(out, images)
  np.testing.assert_array_equal(augment.color_jitter(jax.random.key(9), images, 0.0), images)
  with pytest.raises(ValueError, match="channels"):
    augment.color_jitter(jax.random.key(9), make_images()[..., :2], 0.5)


def rectangle_of(changed):
  """(top, left, height, width) of a boolean [H, W] mask that must be one filled rectangle."""
  rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
  top, left = rows[0], cols[0]
  height, width = rows[-1] - top + 1, cols[-1] - left + 1
  box = np.zeros_like(changed)
  box[top:top + height, left:left + width] = True
  np.testing.assert_array_equal(changed, box)
  return top, left, height, width


def test_random_erasing_zeroes_one_rectangle_per_erased_example():
  batch, key = 512, jax.random.key(10)
  images = 0.05 + 0.9 * make_images(batch=batch)  # no pixel is 0 before erasing
  boxes = np.asarray(augment.erase_boxes(key, batch, HEIGHT, WIDTH, 0.5))
  out = np.asarray(augment.random_erasing(key, images, 0.5))
  erased = boxes[:, 2] > 0
  np.testing.assert_array_equal(out[~erased], images[~erased])
  fractions = []
  for image, original, box in zip(out[erased], images[erased], boxes[erased]):
    changed = image != original
    np.testing.assert_array_equal(changed, changed[..., :1].repeat(CHANNELS, -1))  # all channels
    assert (image[changed] == 0).all()
    assert tuple(rectangle_of(changed[..., 0])) == tuple(box)
    fractions.append(box[2] * box[3] / (HEIGHT * WIDTH))
  assert 0.02 <= min(fractions) and max(fractions) <= 0.33
  assert len(set(map(tuple, boxes[erased]))) > 20  # boxes vary per example
  assert 0.43 < erased.mean() < 0.57  # 512 coins: std of the mean is 0.022


@pytest.mark.parametrize("prob", [0.1, 0.9, 1.0])
def test_erase_rate_is_prob(prob):
  boxes = np.asarray(augment.erase_boxes(jax.random.key(11), 4096, 32, 32, prob))
  assert abs((boxes[:, 2] > 0).mean() - prob) < 0.025  # std <= 0.008
  areas = boxes[boxes[:, 2] > 0, 2:].prod(axis=1) / 1024
  assert 0.02 <= areas.min() and areas.max() <= 0.33 and areas.mean() > 0.12  # U[.02,.33]


def test_erasing_off_is_identity_and_bad_prob_is_config_error():
  images = make_images()
  np.testing.assert_array_equal(augment.random_erasing(jax.random.key(0), images, 0.0), images)
  with pytest.raises(ConfigError, match="erase_prob"):
    augment.augment(jax.random.key(0), images, aug_config(erase_prob=1.5))
  with pytest.raises(ConfigError, match="color_jitter"):
    augment.augment(jax.random.key(0), images, aug_config(color_jitter=-1.0))


def test_new_transforms_leave_old_draws_unchanged():
  images, key = make_images(), jax.random.key(12)
  crop_key, flip_key, noise_key = jax.random.split(key, 3)
  expected = augment.random_flip(flip_key, augment.random_crop(crop_key, images, 2))
  expected = augment.color_jitter(jax.random.fold_in(key, 3), expected, 0.5)
  expected = augment.random_erasing(jax.random.fold_in(key, 4), expected, 0.5)
  expected = augment.gaussian_noise(noise_key, expected, 0.05)
  np.testing.assert_array_equal(augment.augment(key, images, aug_config(**CONTRASTIVE)),
                                expected)
  # Present but off, the new fields change nothing.
  old = aug_config(crop_pad=2, flip=True, noise_std=0.05)
  off = aug_config(crop_pad=2, flip=True, noise_std=0.05, color_jitter=0.0, erase_prob=0.0)
  np.testing.assert_array_equal(augment.augment(key, images, off),
                                augment.augment(key, images, old))


def test_views_are_independent_augmentations_and_deterministic():
  images, key, config = make_images(), jax.random.key(13), aug_config(**CONTRASTIVE)
  views = np.asarray(augment.views(key, images, config, 3))
  assert views.shape == (BATCH, 3, HEIGHT, WIDTH, CHANNELS)
  for v, view_key in enumerate(jax.random.split(key, 3)):
    np.testing.assert_array_equal(views[:, v], augment.augment(view_key, images, config))
  for a, b in ((0, 1), (0, 2), (1, 2)):
    differs = np.abs(views[:, a] - views[:, b]).reshape(BATCH, -1).max(axis=1) > 0
    assert differs.all()
  np.testing.assert_array_equal(augment.views(key, images, config, 3), views)
  pair = np.asarray(augment.two_views(key, images, config))
  np.testing.assert_array_equal(pair, augment.views(key, images, config, 2))
  with pytest.raises(ConfigError, match="num_views"):
    augment.views(key, images, config, 0)


def four_gray_views(key, images, config):
  return augment.views(key, images[..., :1], config, 4)


SHARDED_CASES = {
    "augment": (aug_config(crop_pad=2, flip=True, noise_std=0.1), augment.augment),
    "augment_contrastive": (aug_config(**CONTRASTIVE), augment.augment),
    "two_views": (aug_config(**CONTRASTIVE), augment.two_views),
    "views_1_channel": (aug_config(crop_pad=1, color_jitter=1.0, erase_prob=0.5),
                        four_gray_views),
}


@pytest.mark.parametrize("case", SHARDED_CASES)
def test_sharded_jit_equals_unsharded_and_traces_once(case):
  chex.clear_trace_counter()
  config, fn = SHARDED_CASES[case]

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(key, images):
    return fn(key, images, config)

  # A separate jit for the single-device reference: eager op-by-op results may differ by an
  # ulp from fused compiled ones, and sharding must not change even that.
  unsharded = jax.jit(lambda key, images: fn(key, images, config))
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  for seed in range(3):  # new keys and new data, same shapes: no retrace
    key, images = jax.random.key(seed), make_images(seed=seed)
    sharded = jax.device_put(images, sharding)
    out = step(key, sharded)
    assert out.sharding.is_equivalent_to(sharding, out.ndim)
    single = jax.device_put(images, jax.devices()[0])
    np.testing.assert_array_equal(out, unsharded(key, single))


@pytest.mark.parametrize("case", SHARDED_CASES)
def test_sharded_augment_needs_no_collectives(case):
  # Per-example ops should stay on each device's shard; a collective would mean XLA
  # gathered the batch to crop it.
  config, fn = SHARDED_CASES[case]
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  images = jax.device_put(make_images(), NamedSharding(mesh, P("data")))
  hlo = jax.jit(lambda k, x: fn(k, x, config)).lower(
      jax.random.key(0), images).compile().as_text()
  for collective in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
    assert collective not in hlo


@pytest.mark.parametrize("option,name", [({"crop_pad": 1}, "crop_pad"), ({"flip": True}, "flip"),
                                         ({"color_jitter": 0.5}, "color_jitter"),
                                         ({"erase_prob": 0.5}, "erase_prob")])
def test_image_transforms_refuse_feature_vectors(option, name):
  """Tabular inputs [B, D] have no image layout: say so instead of failing in a reshape."""
  features = np.zeros((4, 108), np.float32)
  with pytest.raises(ConfigError, match=rf"augment.{name}=\S+ needs images \(height, width, "
                                        r"channels\), but the input has shape \[108\]"):
    augment.augment(jax.random.key(0), features, aug_config(**option))
  noisy = augment.augment(jax.random.key(0), features, aug_config(noise_std=0.1))
  assert noisy.shape == features.shape and float(np.std(noisy)) > 0.05  # noise still applies


@pytest.mark.parametrize("option,message", [
    ({"crop_pad": 8}, r"augment.crop_pad=8 must be smaller than the 8x8 images"),
    ({"crop_pad": -1}, r"augment.crop_pad=-1 must be an integer >= 0"),
    ({"noise_std": float("nan")}, r"augment.noise_std=nan must be >= 0 and finite"),
    ({"erase_prob": 1.5}, r"augment.erase_prob=1.5 must be in \[0, 1\]"),
    ({"color_jitter": -0.5}, r"augment.color_jitter=-0.5 must be >= 0"),
])
def test_check_refuses_bad_settings_by_key(option, message):
  with pytest.raises(ConfigError, match=message):
    augment.check(aug_config(**option), (8, 8, 1))
  augment.check(aug_config(), (8, 8, 1))  # the defaults pass
