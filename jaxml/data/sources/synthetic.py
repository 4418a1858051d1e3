"""A generated classification set: class-dependent Gaussian blobs shaped like images.

For tests and benchmarks that need a controllable size (`data.num_train`, `data.image_shape`)
without any file. Deterministic in `data.seed`.
"""

from __future__ import annotations

import numpy as np

from jaxml.data.base import ArraySplit, Dataset, image_classification


def load(data_config) -> Dataset:
  shape = tuple(data_config.get("image_shape", (8, 8, 1)))
  num_classes = int(data_config.get("num_classes", 10))
  num_train = int(data_config.get("num_train", 1024))
  num_test = int(data_config.get("num_test", 256))
  rng = np.random.default_rng(int(data_config.get("seed", 0)))
  centers = rng.uniform(0.2, 0.8, size=(num_classes,) + shape).astype(np.float32)

  def make(n):
    labels = rng.integers(0, num_classes, size=n).astype(np.int32)
    noise = rng.normal(0.0, 0.15, size=(n,) + shape).astype(np.float32)
    return ArraySplit({"image": np.clip(centers[labels] + noise, 0, 1), "label": labels})

  return image_classification(make(num_train), make(num_test), shape, num_classes,
                              name="synthetic")
