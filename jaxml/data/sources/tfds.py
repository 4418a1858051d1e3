"""TFDS datasets read TF-free: `tfds.data_source` (ArrayRecord random access) wrapped by grain.

Source spec `tfds:<name>` (any name `tfds.builder` accepts, e.g. `tfds:mnist`,
`tfds:cifar10:3.0.2`). Config fields: `data_dir` (None or "" = TFDS default), `train_split`,
`test_split`, `image_key`, `label_key`, and `image_size`: S > 0 resizes every image so its
shorter side is S (bilinear) and centre-crops it to S x S, which datasets whose images differ
in size (e.g. `imagenet2012`) need.

Examples are `image` float32 [H, W, C] in [0, 1] and `label` int32, a classification task
whose class names are the ClassLabel's.

Reading needs no TensorFlow, but preparing a dataset does, once, and must write ArrayRecord
(the default TFRecord files have no random access):

    pip install 'jaxml[tf]' && tfds build <name> --file_format=array_record [--data_dir=DIR]
"""

from __future__ import annotations

import dataclasses
import functools

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from jaxml.data.base import Dataset, image_classification
from jaxml.errors import ConfigError

PREFIX = "tfds:"

# What `tfds.data_source(..., download=False)` raises for a known name it cannot read, as
# measured with tfds 4.9.10: KeyError (never prepared, default data_dir), NotImplementedError
# (never prepared under an explicit data_dir, or prepared as TFRecord), ValueError (unknown
# split or config, no file format recorded), AssertionError (unknown version).
_UNREADABLE = (KeyError, NotImplementedError, ValueError, AssertionError, FileNotFoundError)


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
  """A `Split` over a grain MapDataset whose elements are already {"image", "label"}."""

  examples: grain.MapDataset
  image_shape: tuple[int, ...]

  def __len__(self) -> int:
    return len(self.examples)

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices)
    size = len(self)
    # grain reads index % len, so an out-of-range index would silently return another example.
    if indices.size and (indices.max() >= size or indices.min() < -size):
      raise IndexError(f"indices out of range for a split of {size} examples")
    if not indices.size:
      return {"image": np.zeros((0, *self.image_shape), np.float32),
              "label": np.zeros((0,), np.int32)}
    examples = [self.examples[int(i)] for i in indices]
    return {key: np.stack([ex[key] for ex in examples]) for key in ("image", "label")}


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """[H, W, C] uint8 -> [size, size, C]: shorter side to `size` (bilinear), centre crop."""
  from PIL import Image  # pylint: disable=import-outside-toplevel  # only for image_size

  height, width = image.shape[:2]
  scale = size / min(height, width)
  new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
  squeeze = image.shape[-1] == 1
  pil = Image.fromarray(image[..., 0] if squeeze else image)
  resized = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
  if squeeze:
    resized = resized[..., None]
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return resized[top:top + size, left:left + size]


def to_example(record, *, image_key: str, label_key: str, scale: float,
               image_size: int = 0) -> dict[str, np.ndarray]:
  """One TFDS record -> {"image": float32 in [0, 1], "label": int32 scalar}."""
  image = np.asarray(record[image_key])
  if image_size:
    image = resize_center_crop(image, image_size)
  return {"image": image.astype(np.float32) * np.float32(scale),
          "label": np.asarray(record[label_key], np.int32)}


def dataset_name(source: str) -> str:
  if not source.startswith(PREFIX) or not source[len(PREFIX):]:
    raise ConfigError(f"expected a source like 'tfds:<name>', got {source!r}")
  return source[len(PREFIX):]


def _first_line(error: BaseException) -> str:
  # KeyError's str() is the repr of its argument; the argument itself reads better.
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def open_split(name: str, split: str, data_dir: str | None):
  """`tfds.data_source` for one split, its failures turned into one actionable ConfigError."""
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except tfds.core.DatasetNotFoundError as e:
    # The full message lists every TFDS dataset; keep the headline and any suggestion.
    lines = str(e).splitlines()
    hint = "".join(f" {line.strip()}" for line in lines if line.startswith("Did you mean"))
    raise ConfigError(f"unknown TFDS dataset {name!r}.{hint}") from None
  except _UNREADABLE as e:
    where = f"data_dir={data_dir}" if data_dir else "the default TFDS data_dir"
    flag = f" --data_dir={data_dir}" if data_dir else ""
    raise ConfigError(
        f"cannot read split {split!r} of TFDS dataset {name!r} from {where}: "
        f"{_first_line(e)} If it is not prepared yet, prepare it as ArrayRecord (TensorFlow is "
        f"needed only for this step): pip install 'jaxml[tf]' && tfds build {name} "
        f"--file_format=array_record{flag}; or set data_dir to where it is prepared."
    ) from e


def _feature_facts(features, name: str, image_key: str, label_key: str, image_size: int = 0):
  """(image shape, scale to [0, 1], class names) from the dataset's feature spec."""
  missing = [key for key in (image_key, label_key) if key not in features]
  if missing:
    raise ConfigError(
        f"TFDS dataset {name!r} has no feature(s) {missing}; available: {sorted(features)}. "
        "Set data.image_key / data.label_key.")
  image, label = features[image_key], features[label_key]
  shape = tuple(image.shape)
  if image_size and len(shape) == 3 and shape[-1] is not None:
    shape = (image_size, image_size, shape[-1])
  if None in shape or len(shape) != 3:
    raise ConfigError(f"TFDS feature {name}/{image_key} has shape {shape}; this source needs "
                      "a fixed [H, W, C] image shape: set data.image_size to resize and crop")
  dtype = np.dtype(image.np_dtype)
  if not np.issubdtype(dtype, np.integer):
    # Float images have no known range, so they could not be promised to lie in [0, 1].
    raise ConfigError(f"TFDS feature {name}/{image_key} has dtype {dtype}; this source needs "
                      "integer images, which it scales to [0, 1]")
  num_classes = getattr(label, "num_classes", None)
  if not num_classes:
    raise ConfigError(f"TFDS feature {name}/{label_key} is {type(label).__name__}, not a "
                      "ClassLabel, so the number of classes is unknown")
  # ClassLabel names its classes "0", "1", ... when the dataset gives no names.
  return shape, 1.0 / np.iinfo(dtype).max, tuple(label.names)


def load(data_config: ml_collections.ConfigDict) -> Dataset:
  """Opens the train and test splits of `data_config.source` ('tfds:<name>')."""
  name = dataset_name(data_config.source)
  data_dir = data_config.get("data_dir") or None
  # `or` as well as the default: a field present but None means "use the default" too.
  image_key = data_config.get("image_key") or "image"
  label_key = data_config.get("label_key") or "label"
  image_size = int(data_config.get("image_size") or 0)
  if image_size < 0:
    raise ConfigError(f"data.image_size={image_size} must be >= 0 (0: keep the stored size)")
  sources = {role: open_split(name, data_config.get(f"{role}_split") or role, data_dir)
             for role in ("train", "test")}
  shape, scale, class_names = _feature_facts(
      sources["train"].dataset_info.features, name, image_key, label_key, image_size)
  convert = functools.partial(to_example, image_key=image_key, label_key=label_key, scale=scale,
                              image_size=image_size)
  splits = {role: TfdsSplit(grain.MapDataset.source(source).map(convert), shape)
            for role, source in sources.items()}
  return image_classification(splits["train"], splits["test"], shape, len(class_names),
                              name=name, class_names=class_names)
