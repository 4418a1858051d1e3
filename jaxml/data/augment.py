"""On-device augmentation of NHWC image batches: pure, jittable functions of (key, images).

They run inside the jitted train step on the global, `data`-sharded batch, so they use only
static shapes and per-example elementwise or gather ops: no host callbacks, no collectives.
Each transform draws its randomness through a small public function (`crop_offsets`,
`flip_mask`) so tests can recompute exactly what was drawn.

Config (`config.augment`), every field off by default:
  crop_pad:  int, 0 = off. Zero-pad by this many pixels per side, crop back at a random offset.
  flip:      bool. Mirror left-right each example with probability 1/2.
  noise_std: float, 0 = off. Add N(0, noise_std^2) to every pixel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxml.errors import ConfigError


def crop_offsets(key: jax.Array, batch_size: int, pad: int) -> jax.Array:
  """int32 [batch_size, 2]: each example's (row, column) crop corner in the padded image."""
  return jax.random.randint(key, (batch_size, 2), 0, 2 * pad + 1, dtype=jnp.int32)


def random_crop(key: jax.Array, images: jax.Array, pad: int) -> jax.Array:
  """Random shift by up to `pad` pixels each way, per example; vacated pixels become 0.

  Zeros rather than edge replication: the standard CIFAR recipe, and a shifted-in black
  border cannot be mistaken for image content the way smeared edges can.
  """
  if pad == 0:
    return images
  _, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def crop_one(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

  # vmap turns the per-example slices into one batched gather that stays sharded on `data`.
  return jax.vmap(crop_one)(padded, crop_offsets(key, images.shape[0], pad))


def flip_mask(key: jax.Array, batch_size: int) -> jax.Array:
  """bool [batch_size]: which examples `random_flip` mirrors."""
  return jax.random.bernoulli(key, 0.5, (batch_size,))


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Mirrors each example left-right (the W axis) with probability 1/2."""
  flipped = flip_mask(key, images.shape[0])[:, None, None, None]
  return jnp.where(flipped, images[:, :, ::-1, :], images)


def gaussian_noise(key: jax.Array, images: jax.Array, std: float) -> jax.Array:
  """Adds N(0, std^2) per pixel. Not clipped to [0, 1]: clipping would shrink the std asked for."""
  return images + std * jax.random.normal(key, images.shape, images.dtype)


def augment(key: jax.Array, images: jax.Array, aug_config: ml_collections.ConfigDict) -> jax.Array:
  """Applies crop, then flip, then noise, as `aug_config` enables them (see module docstring).

  The config is read at trace time, so it must be closed over, not passed as a traced argument.
  Each transform gets its own sub-key whatever else is enabled, so turning one on or off does
  not change what the others draw.
  """
  crop_pad = int(aug_config.get("crop_pad", 0) or 0)
  flip = bool(aug_config.get("flip", False))
  noise_std = float(aug_config.get("noise_std", 0.0) or 0.0)
  if crop_pad < 0 or noise_std < 0:
    raise ConfigError(f"augment.crop_pad and augment.noise_std must be >= 0, got {crop_pad}, "
                      f"{noise_std}")
  crop_key, flip_key, noise_key = jax.random.split(key, 3)
  if crop_pad:
    images = random_crop(crop_key, images, crop_pad)
  if flip:
    images = random_flip(flip_key, images)
  if noise_std:
    images = gaussian_noise(noise_key, images, noise_std)
  return images
