"""CelebA faces (TFDS `celeb_a`, read TF-free): blond hair, with gender as the shortcut.

Source `celeba` (issue 19), the spurious-correlation benchmark of Sagawa et al. 2020: predict
`data.target` ("Blond_Hair") from the face, where the attribute `data.attribute` ("Male") is
correlated with it in train (94% of blond train faces are female, but only half of the others),
so a model that reads gender is wrong on blond men. Any two of CelebA's 40 binary attributes
can be chosen (e.g. target "Smiling", attribute "Wearing_Lipstick").

Fields: `image` float32 [S, S, 3] in [0, 1], S = `data.image_size`; `label` int32 (1: the
face has the target attribute); `attribute` int32 (1: it has `data.attribute`); `group` int32
= label * 2 + attribute (for the default, 0 non-blond women, 1 non-blond men, 2 blond women,
3 blond men: Sagawa et al.'s numbering, group 3 the worst); `aligned` int32. Task: 2-class
classification of `label` from `image`, groups ("group", "aligned").

`aligned` follows jaxml/data/spurious.py: 1 where the attribute points at the example's own
class. The attribute value that points at class c is the one over-represented in class c
relative to the other class in the train split read (P(a = v | y = c) > P(a = v | y != c);
v = c on a tie), so each class gets the opposite value. For the default that pairs blond with
female and not-blond with male: aligned are non-blond men and blond women, misaligned are
non-blond women and blond men. (The value most common within each class would not do: women
are the majority of both classes in CelebA train, so `aligned` would just mean "female".)

Images: the stored 218 x 178 JPEG is decoded at the smallest JPEG scale (1/2, 1/4, 1/8) still
at least S pixels high and wide (PIL's draft mode, far cheaper than a full decode), and its
centred square resized to S x S (bilinear); S = 0 keeps 218 x 178. Images are decoded when a
batch is read, on a thread pool (`waterbirds.decode_images`), never held in memory. Labels and
attributes are read once at load, from the serialized records (TFDS's own decoding would
decode every image too): 80-180 us a record measured here, so 15-35 s for all 182,732 of
train and test. TFDS shuffled the records when it prepared them, so `data.max_examples`
(> 0), which reads the first N of each split, reads a random sample.

Splits: train (162,770 faces) and, as the Dataset's `test`, TFDS's "test" (19,962) or
"validation" (19,867) per `data.eval_split`.

Config (all optional): `tfds_name` ("celeb_a"), `data_dir` ("" = TFDS default), `target`
("Blond_Hair"), `attribute` ("Male"), `image_size` (64), `max_examples` (0 = all),
`eval_split` ("test" or "validation"). Reading needs no TensorFlow; preparing the data does,
once (and the download is from Google Drive, which may need doing by hand):

    pip install 'jaxml[tf]' && tfds build celeb_a --file_format=array_record
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from jaxml.data import spurious
from jaxml.data.base import Dataset, Field, Task
from jaxml.data.sources.tfds import open_split
from jaxml.data.sources.waterbirds import (LazyImageSplit, check_eval_split, check_size,
                                           decode_images)
from jaxml.errors import ConfigError

DEFAULTS = {"tfds_name": "celeb_a", "data_dir": "", "target": "Blond_Hair",
            "attribute": "Male", "image_size": 64, "max_examples": 0, "eval_split": "test"}


def shortcut_values(labels: np.ndarray, attributes: np.ndarray) -> np.ndarray:
  """[2]: the binary attribute value that points at each class (see the module doc)."""
  rates = [attributes[labels == c].mean() if np.any(labels == c) else 0.5 for c in (0, 1)]
  one_for = 0 if rates[0] > rates[1] else 1  # the class that value 1 is over-represented in
  return np.array([1 - one_for, one_for], np.int32)


def _int_feature(example, key: str) -> int:
  return int(example.features.feature[key].int64_list.value[0])


def _image_bytes(record: bytes) -> io.BytesIO:
  example = tf_example_pb2.Example.FromString(record)
  return io.BytesIO(example.features.feature["image"].bytes_list.value[0])


def scan_attributes(records, count: int, keys: Sequence[str]) -> np.ndarray:
  """int32 [count, len(keys)]: the 0/1 attributes `keys` of the first `count` records, parsed
  from the serialized examples (TFDS's own decoding would decode every image too)."""
  out = np.empty((count, len(keys)), np.int32)
  for row in range(count):
    example = tf_example_pb2.Example.FromString(records[row])
    out[row] = [_int_feature(example, f"attributes/{key}") for key in keys]
  return out


def open_records(name: str, split: str, data_dir: str | None):
  """The split's records as serialized tf.Examples (random access, TF-free)."""
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                            deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  except Exception:
    open_split(name, split, data_dir)  # raises the ConfigError that says how to prepare it
    raise


def _check_attribute_names(values: dict, features) -> None:
  names = sorted(features["attributes"].keys()) if "attributes" in features else []
  for key in ("target", "attribute"):
    value = values[key]
    if value not in names:
      close = difflib.get_close_matches(str(value), names, n=3, cutoff=0.5)
      hint = f"did you mean {' or '.join(close)}? " if close else ""
      raise ConfigError(f"celeba: data.{key}={value!r} is not a CelebA attribute; {hint}"
                        f"choose one of its {len(names)} attribute columns, e.g. "
                        f"{', '.join(names[:4])}, ..., Blond_Hair, Male, Smiling")
  if values["target"] == values["attribute"]:
    raise ConfigError(f"celeba: data.target and data.attribute are both {values['target']!r}; "
                      "the shortcut attribute must be another column")


def _settings(data_config) -> dict:
  values = {k: data_config.get(k, v) for k, v in DEFAULTS.items()}
  for key in ("image_size", "max_examples"):
    check_size(values, key, "celeba")
  check_eval_split(values, "celeba")
  return values


def load(data_config) -> Dataset:
  values = _settings(data_config)
  name, data_dir = values["tfds_name"], values["data_dir"] or None
  size = int(values["image_size"])
  splits = {"train": "train", "test": values["eval_split"]}
  records = {role: open_records(name, split, data_dir) for role, split in splits.items()}
  features = records["train"].dataset_info.features
  _check_attribute_names(values, features)
  shape = (size, size, 3) if size else tuple(features["image"].shape)
  keys = (values["target"], values["attribute"])
  table = {}
  for role, source in records.items():
    count = min(len(source), values["max_examples"] or len(source))
    if not count:
      raise ConfigError(f"celeba: the {splits[role]!r} split of {name!r} is empty")
    table[role] = scan_attributes(source, count, keys)
  points_at = shortcut_values(table["train"][:, 0], table["train"][:, 1])
  split_objects = {}
  for role, source in records.items():
    y, a = table[role][:, 0], table[role][:, 1]
    arrays = {"label": y, "attribute": a, "aligned": (a == points_at[y]).astype(np.int32),
              "group": spurious.group_ids(y, a, 2)}
    # One record at a time: measured faster here than array_record's batched __getitems__,
    # which TFDS's mock_data also cannot serve (it installs it unbound).
    read = lambda rows, source=source: decode_images(
        [_image_bytes(source[int(r)]) for r in rows], size, shape)
    split_objects[role] = LazyImageSplit(arrays, read)
  target, attribute = keys
  class_names = (f"not {target}", target)
  fields = {"image": Field(shape, "float32"), "label": Field((), "int32", class_names),
            **spurious.group_fields("attribute", class_names, (f"not {attribute}", attribute))}
  task = Task("classification", ("image",), "label", 2, groups=("group", "aligned"))
  return Dataset(split_objects["train"], split_objects["test"], fields, task, name="celeba")
