"""sklearn's bundled 8x8 handwritten digits: 1,797 images, 10 classes, no download.

The train/test split is deterministic (stratified, fixed seed), so every machine sees the
same 1,437 training and 360 test images.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from jaxml.data.base import ArraySplit, Dataset, image_classification

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load(data_config=None) -> Dataset:
  del data_config  # digits has no options
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]  # [N, 8, 8, 1] in [0, 1]
  labels = digits.target.astype(np.int32)
  x_train, x_test, y_train, y_test = train_test_split(
      images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
  return image_classification(
      ArraySplit({"image": x_train, "label": y_train}),
      ArraySplit({"image": x_test, "label": y_test}), (8, 8, 1), 10, name="digits",
      class_names=[str(d) for d in range(10)])
