"""On-device augmentation of NHWC image batches: pure, jittable functions of (key, images).

They run inside the jitted train step on the global, `data`-sharded batch, so they use only
static shapes and per-example elementwise or gather ops: no host callbacks, no collectives.
Each transform draws its randomness through a small public function (`crop_offsets`,
`flip_mask`, `jitter_factors`, `erase_boxes`) so tests can recompute exactly what was drawn.

Config (`config.augment`), every field off by default:
  crop_pad:     int, 0 = off. Zero-pad by this many pixels per side, crop back at a random offset.
  flip:         bool. Mirror left-right each example with probability 1/2.
  color_jitter: float strength s, 0 = off. SimCLR colour distortion (`color_jitter`).
  erase_prob:   float in [0, 1], 0 = off. Random erasing of one rectangle (`random_erasing`).
  noise_std:    float, 0 = off. Add N(0, noise_std^2) to every pixel.

Only `noise_std` applies to inputs that are not images (e.g. tabular feature vectors [B, D]);
the others raise ConfigError on them rather than guessing an image layout.

`views` stacks independently augmented copies of a batch for contrastive learning.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from jaxml.core import checks
from jaxml.errors import ConfigError


def _require_images(images: jax.Array, what: str) -> None:
  # Shapes are static, so this runs once at trace time, not per step.
  if images.ndim != 4:
    raise ConfigError(f"{what} needs NHWC image batches, but the input has shape "
                      f"{list(images.shape)}; turn it off for data that is not images")


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
  _require_images(images, "augment.crop_pad")
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
  _require_images(images, "augment.flip")
  flipped = flip_mask(key, images.shape[0])[:, None, None, None]
  return jnp.where(flipped, images[:, :, ::-1, :], images)


def gaussian_noise(key: jax.Array, images: jax.Array, std: float) -> jax.Array:
  """Adds N(0, std^2) per pixel. Not clipped to [0, 1]: clipping would shrink the std asked for."""
  return images + std * jax.random.normal(key, images.shape, images.dtype)


# ITU-R BT.601 luma, as torchvision's rgb_to_grayscale and tf.image.rgb_to_grayscale use.
_LUMA = (0.299, 0.587, 0.114)


def jitter_factors(key: jax.Array, batch_size: int, strength: float) -> jax.Array:
  """float32 [batch_size, 4]: each example's brightness, contrast, saturation, hue draw.

  As SimCLR (v2) and torchvision's ColorJitter(0.8s, 0.8s, 0.8s, 0.2s): the first three are
  multiplicative factors from U[max(0, 1 - 0.8s), 1 + 0.8s]; hue is a shift from
  U[-0.2s, 0.2s] in turns (hue's max is 0.5: half a turn).
  """
  low = max(0.0, 1.0 - 0.8 * strength)
  factors = jax.random.uniform(key, (batch_size, 3), minval=low, maxval=1.0 + 0.8 * strength)
  hue = min(0.2 * strength, 0.5)
  shift = jax.random.uniform(jax.random.fold_in(key, 1), (batch_size, 1), minval=-hue, maxval=hue)
  return jnp.concatenate([factors, shift], axis=1)


def _luma(images: jax.Array) -> jax.Array:
  """[B, H, W, 1]; a 1-channel image is its own luma."""
  if images.shape[-1] == 1:
    return images
  return images @ jnp.asarray(_LUMA, images.dtype)[:, None]


def _shift_hue(images: jax.Array, turns: jax.Array) -> jax.Array:
  """Adds `turns` [B] to each example's HSV hue (mod 1): an elementwise RGB->HSV->RGB trip."""
  red, green, blue = images[..., 0], images[..., 1], images[..., 2]
  value = jnp.max(images, axis=-1)
  chroma = value - jnp.min(images, axis=-1)
  has_hue = chroma > 0
  saturation = jnp.where(value > 0, chroma / jnp.where(value > 0, value, 1), 0)
  safe_chroma = jnp.where(has_hue, chroma, 1)
  # Hue sector by which channel is largest, as colorsys.rgb_to_hsv (ties go to red, then green).
  sector = jnp.where(value == red, (green - blue) / safe_chroma,
                     jnp.where(value == green, 2 + (blue - red) / safe_chroma,
                               4 + (red - green) / safe_chroma))
  hue = jnp.where(has_hue, sector / 6, 0) + turns[:, None, None]
  hue = hue - jnp.floor(hue)
  scaled = hue * 6
  index = jnp.floor(scaled)
  frac = scaled - index
  index = index.astype(jnp.int32) % 6
  p = value * (1 - saturation)
  q = value * (1 - saturation * frac)
  t = value * (1 - saturation * (1 - frac))

  def by_sector(*options):  # elementwise select: jnp.choose's gather would cross shards
    return jax.lax.select_n(index, *options)

  return jnp.stack([by_sector(value, q, p, p, t, value), by_sector(t, value, value, q, p, p),
                    by_sector(p, p, t, value, value, q)], axis=-1)


def color_jitter(key: jax.Array, images: jax.Array, strength: float) -> jax.Array:
  """SimCLR colour distortion at strength s, per example; output clipped to [0, 1].

  Brightness (x * b), then contrast (blend with the image's mean luma), then saturation (blend
  with each pixel's luma), then hue (shift in HSV space, elementwise). Each step clips to
  [0, 1], as torchvision's do. The order is fixed, not shuffled
  per example as torchvision's is: one code path, and `jitter_factors` says exactly what was
  done. SimCLR also applies the jitter with probability 0.8 and grayscale with 0.2; compose
  those outside if wanted. Saturation and hue need colour, so 1-channel images get brightness
  and contrast only; other channel counts are errors. Strength 0 returns `images` unchanged.
  Inputs are expected in [0, 1].
  """
  if strength < 0:
    raise ConfigError(f"color_jitter strength must be >= 0, got {strength}")
  _require_images(images, "augment.color_jitter")
  channels = images.shape[-1]
  if channels not in (1, 3):
    raise ValueError(f"color_jitter needs 1 or 3 channels (NHWC), got {channels}")
  if strength == 0:
    return images
  factors = jitter_factors(key, images.shape[0], strength).astype(images.dtype)
  brightness, contrast, saturation = (factors[:, i, None, None, None] for i in range(3))
  images = jnp.clip(images * brightness, 0.0, 1.0)
  mean = jnp.mean(_luma(images), axis=(1, 2, 3), keepdims=True)
  images = jnp.clip((images - mean) * contrast + mean, 0.0, 1.0)
  if channels == 3:
    gray = _luma(images)
    images = jnp.clip((images - gray) * saturation + gray, 0.0, 1.0)
    images = jnp.clip(_shift_hue(images, factors[:, 3]), 0.0, 1.0)
  return images


def erase_boxes(key: jax.Array, batch_size: int, height: int, width: int, prob: float,
                scale: tuple[float, float] = (0.02, 0.33),
                ratio: tuple[float, float] = (0.3, 3.3), attempts: int = 10) -> jax.Array:
  """int32 [batch_size, 4]: each example's erased (top, left, box_height, box_width).

  Zeros for examples left whole. As torchvision's RandomErasing: an area fraction from
  U[scale], an aspect ratio log-uniform in `ratio`, up to `attempts` tries for a box that
  fits; here all tries are drawn at once (static shapes) and the first that fits is taken.
  "Fits" also requires the rounded box's area fraction to lie in `scale`. An example where
  no try fits is left whole, as torchvision does; with the default scale and ratio none of
  20,000 draws failed even on 4x4 images, so the erase rate is `prob` in practice.
  """
  area_key, ratio_key, place_key, apply_key = jax.random.split(key, 4)
  area = height * width
  target = area * jax.random.uniform(area_key, (batch_size, attempts), minval=scale[0],
                                     maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(ratio_key, (batch_size, attempts),
                                      minval=math.log(ratio[0]), maxval=math.log(ratio[1])))
  box_h = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
  box_w = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
  box_area = box_h * box_w
  fits = ((box_h >= 1) & (box_h <= height) & (box_w >= 1) & (box_w <= width)
          & (box_area >= scale[0] * area) & (box_area <= scale[1] * area))
  first = jnp.argmax(fits, axis=1)[:, None]
  box_h = jnp.take_along_axis(box_h, first, axis=1)[:, 0]
  box_w = jnp.take_along_axis(box_w, first, axis=1)[:, 0]
  erase = jax.random.bernoulli(apply_key, prob, (batch_size,)) & jnp.any(fits, axis=1)
  place = jax.random.uniform(place_key, (batch_size, 2))
  top = jnp.minimum(jnp.floor(place[:, 0] * (height - box_h + 1)).astype(jnp.int32),
                    height - box_h)
  left = jnp.minimum(jnp.floor(place[:, 1] * (width - box_w + 1)).astype(jnp.int32),
                     width - box_w)
  boxes = jnp.stack([top, left, box_h, box_w], axis=1)
  return jnp.where(erase[:, None], boxes, 0)


def random_erasing(key: jax.Array, images: jax.Array, prob: float,
                   scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3)) -> jax.Array:
  """With probability `prob` per example, sets one random rectangle (all channels) to 0.

  Zero rather than noise: deterministic given the box, so tests can check it exactly, and
  it is torchvision's default (`value=0`). The rectangle is a mask built by comparing row
  and column indices with the per-example box from `erase_boxes`: no dynamic shapes.
  """
  if not 0.0 <= prob <= 1.0:
    raise ConfigError(f"erase_prob must be in [0, 1], got {prob}")
  if not 0.0 < scale[0] <= scale[1] <= 1.0:
    raise ValueError(f"random_erasing scale must satisfy 0 < low <= high <= 1, got {scale}")
  if prob == 0:
    return images
  _require_images(images, "augment.erase_prob")
  batch, height, width, _ = images.shape
  top, left, box_h, box_w = erase_boxes(key, batch, height, width, prob, scale, ratio).T
  rows, cols = jnp.arange(height), jnp.arange(width)
  in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])  # [B, H]
  in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])  # [B, W]
  inside = in_rows[:, :, None, None] & in_cols[:, None, :, None]
  return jnp.where(inside, jnp.zeros((), images.dtype), images)


RULES = {"augment.crop_pad": checks.count(0), "augment.flip": checks.flag,
         "augment.color_jitter": checks.non_negative, "augment.erase_prob": checks.fraction,
         "augment.noise_std": checks.non_negative}
IMAGE_ONLY = ("crop_pad", "flip", "color_jitter", "erase_prob")


def check(aug_config: ml_collections.ConfigDict, input_shape: tuple[int, ...]) -> None:
  """ConfigError naming `augment.<key>` unless `aug_config` fits inputs of `input_shape` (per
  example): every value in range, a crop pad smaller than the image (a larger one shifts the
  whole image out of view), image-only transforms off for inputs that are not images. The
  algorithms call it in `build`, before anything compiles; `augment` calls it again at trace
  time for any other caller."""
  checks.check_values({"augment": aug_config}, RULES)
  if len(input_shape) != 3:
    for name in IMAGE_ONLY:
      if aug_config.get(name, 0):
        raise ConfigError(f"augment.{name}={aug_config[name]!r} needs images (height, width, "
                          f"channels), but the input has shape {list(input_shape)}; turn it "
                          "off for data that is not images")
    return
  height, width = input_shape[:2]
  pad = aug_config.get("crop_pad", 0) or 0
  if pad >= min(height, width):
    raise ConfigError(f"augment.crop_pad={pad} must be smaller than the {height}x{width} "
                      "images")


def augment(key: jax.Array, images: jax.Array, aug_config: ml_collections.ConfigDict) -> jax.Array:
  """Applies crop, flip, colour jitter, erasing, then noise, as `aug_config` enables them.

  The config is read at trace time, so it must be closed over, not passed as a traced argument.
  Each transform gets its own sub-key whatever else is enabled, so turning one on or off does
  not change what the others draw. Crop, flip and noise keep the keys they had before colour
  jitter and erasing existed (`split(key, 3)`); the new ones take `fold_in(key, 3)` and
  `fold_in(key, 4)`, which with JAX's partitionable threefry (the default) are exactly
  `split(key, 5)[3:]`: fresh counters, independent of the first three.
  """
  check(aug_config, images.shape[1:])
  crop_pad = int(aug_config.get("crop_pad", 0) or 0)
  flip = bool(aug_config.get("flip", False))
  jitter = float(aug_config.get("color_jitter", 0.0) or 0.0)
  erase_prob = float(aug_config.get("erase_prob", 0.0) or 0.0)
  noise_std = float(aug_config.get("noise_std", 0.0) or 0.0)
  crop_key, flip_key, noise_key = jax.random.split(key, 3)
  if crop_pad:
    images = random_crop(crop_key, images, crop_pad)
  if flip:
    images = random_flip(flip_key, images)
  if jitter:
    images = color_jitter(jax.random.fold_in(key, 3), images, jitter)
  if erase_prob:
    images = random_erasing(jax.random.fold_in(key, 4), images, erase_prob)
  if noise_std:
    images = gaussian_noise(noise_key, images, noise_std)
  return images


def views(key: jax.Array, images: jax.Array, aug_config: ml_collections.ConfigDict,
          num_views: int) -> jax.Array:
  """[B, num_views, H, W, C]: view v is `augment(split(key, num_views)[v], images, ...)`.

  Views are independent draws of the same augmentation. A Python loop over the (few, static)
  views rather than vmap over keys: each view is then exactly what `augment` gives, and the
  batch axis stays first, so the result keeps the input's `data` sharding.
  """
  if num_views < 1:
    raise ConfigError(f"num_views must be >= 1, got {num_views}")
  keys = jax.random.split(key, num_views)
  return jnp.stack([augment(keys[v], images, aug_config) for v in range(num_views)], axis=1)


def two_views(key: jax.Array, images: jax.Array,
              aug_config: ml_collections.ConfigDict) -> jax.Array:
  """[B, 2, H, W, C]: two independently augmented views of each image (SimCLR, SupCon)."""
  return views(key, images, aug_config, 2)
