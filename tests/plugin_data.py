"""A dataset plug-in for tests (`--config.data.source=tests.plugin_data:digits_with_extremes`)."""

import dataclasses

import numpy as np

from jaxml.data.base import ArraySplit, Dataset
from jaxml.data.sources import digits

POISON_EVERY = 97


def digits_with_extremes(data_config) -> Dataset:
  """Digits with every 97th training image at float32's largest value: valid, finite data
  (loading accepts it; NaN data is refused) whose forward pass overflows, so exactly the
  batches holding one of them give non-finite losses and updates."""
  del data_config
  base = digits.load()
  images = base.train.arrays["image"].copy()
  images[::POISON_EVERY] = np.finfo(np.float32).max
  return dataclasses.replace(
      base, train=ArraySplit({"image": images, "label": base.train.arrays["label"]}),
      name="digits_with_extremes")
