"""A dataset plug-in for tests (`--config.data.source=tests.plugin_data:digits_with_nans`)."""

import dataclasses

import numpy as np

from jaxml.data.base import ArraySplit, Dataset
from jaxml.data.sources import digits


def digits_with_nans(data_config) -> Dataset:
  """Digits with every 97th training image set to NaN: some batches hold a poisoned example."""
  del data_config
  base = digits.load()
  images = base.train.arrays["image"].copy()
  images[::97] = np.nan
  return dataclasses.replace(
      base, train=ArraySplit({"image": images, "label": base.train.arrays["label"]}),
      name="digits_with_nans")
