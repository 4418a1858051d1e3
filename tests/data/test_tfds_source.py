"""The TFDS source, TF-free: mocked TFDS datasets, and a tiny one really prepared as ArrayRecord."""

import ml_collections
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from jaxml.data.sources import tfds as tfds_source
from jaxml.errors import ConfigError

NUM_EXAMPLES = 12
# name -> (image shape, num_classes), from the real TFDS metadata the mock reuses.
MOCKED = {"mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10)}


def data_config(source, **fields):
  return ml_collections.ConfigDict({"source": source, "data_dir": None, **fields})


@pytest.fixture(params=sorted(MOCKED))
def mocked(request):
  """(name, Dataset) read from `tfds.testing.mock_data`, which needs no files and no TF."""
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    yield request.param, tfds_source.load(data_config(f"tfds:{request.param}"))


def test_shapes_dtypes_and_ranges(mocked):
  name, dataset = mocked
  shape, num_classes = MOCKED[name]
  assert dataset.fields["image"].shape == shape
  assert (dataset.num_classes, dataset.name) == (num_classes, name)
  for split in (dataset.train, dataset.test):
    assert len(split) == NUM_EXAMPLES
    batch = split.read(np.arange(NUM_EXAMPLES))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (NUM_EXAMPLES, *shape) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (NUM_EXAMPLES,) and batch["label"].dtype == np.int32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["image"].max() > 0.5  # scaled, not all near zero: the mock spans 0..255
    assert ((0 <= batch["label"]) & (batch["label"] < num_classes)).all()


def test_read_equals_raw_records_one_by_one(mocked):
  name, dataset = mocked
  raw = tfds.data_source(name, split="train", download=False)
  indices = np.array([5, 0, 5, 11, 3])
  batch = dataset.train.read(indices)
  expected_images = np.stack([raw[int(i)]["image"].astype(np.float32) / 255 for i in indices])
  expected_labels = np.array([raw[int(i)]["label"] for i in indices], np.int32)
  np.testing.assert_allclose(batch["image"], expected_images, rtol=1e-6)
  np.testing.assert_array_equal(batch["label"], expected_labels)
  singles = [dataset.train.read(np.array([i])) for i in indices]
  for key in ("image", "label"):
    np.testing.assert_array_equal(batch[key], np.concatenate([s[key] for s in singles]))


def test_reads_are_deterministic(mocked):
  name, dataset = mocked
  indices = np.array([7, 2, 9])
  first, second = dataset.train.read(indices), dataset.train.read(indices)
  reloaded = tfds_source.load(data_config(f"tfds:{name}")).train.read(indices)
  for key in ("image", "label"):
    np.testing.assert_array_equal(first[key], second[key])
    np.testing.assert_array_equal(first[key], reloaded[key])


def test_empty_and_out_of_range_reads(mocked):
  _, dataset = mocked
  empty = dataset.train.read(np.array([], np.int64))
  assert empty["image"].shape == (0, *dataset.fields["image"].shape)
  assert empty["image"].dtype == np.float32
  assert empty["label"].shape == (0,) and empty["label"].dtype == np.int32
  with pytest.raises(IndexError):
    dataset.train.read(np.array([0, NUM_EXAMPLES]))


@pytest.mark.parametrize("field", ["image_key", "label_key"])
def test_missing_feature_key_names_available_keys(field):
  with tfds.testing.mock_data(num_examples=2):
    with pytest.raises(ConfigError,
                       match=r"no feature.*'nope'.*available: \['id', 'image', 'label'\]"):
      tfds_source.load(data_config("tfds:cifar10", **{field: "nope"}))


def test_unknown_dataset_name():
  with pytest.raises(ConfigError, match=r"unknown TFDS dataset 'cifar1'.*Did you mean.*cifar10"):
    tfds_source.load(data_config("tfds:cifar1"))


@pytest.mark.parametrize("source", ["cifar10", "tfds:", "sklearn:digits"])
def test_malformed_source(source):
  with pytest.raises(ConfigError, match="tfds:<name>"):
    tfds_source.load(data_config(source))


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(ConfigError) as error:
    tfds_source.load(data_config("tfds:cifar10", data_dir=str(tmp_path)))
  message = str(error.value)
  assert "\n" not in message
  assert "pip install 'jaxml[tf]' && tfds build cifar10 --file_format=array_record" in message
  assert f"--data_dir={tmp_path}" in message


class JaxmlTestTinyImages(tfds.core.GeneratorBasedBuilder):
  """A real TFDS builder that prepares without TF: PIL images are PNG-encoded by PIL."""

  VERSION = tfds.core.Version("1.0.0")
  # tfds 4.9.10 finds checksums through `importlib_resources`, which it only declares as a
  # dependency for Python < 3.9; there are no downloads to check, so skip that lookup.
  url_infos = None
  SIZES = {"train": 6, "test": 3}

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "pixels": tfds.features.Image(shape=(4, 5, 3)),
        "digit": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in self.SIZES}

  def _generate_examples(self, split):
    for i in range(self.SIZES[split]):
      yield i, {"pixels": PIL.Image.fromarray(tiny_image(split, i)), "digit": i % 3}


def tiny_image(split, i):
  return np.random.default_rng([len(split), i]).integers(0, 256, (4, 5, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  JaxmlTestTinyImages(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


def tiny_config(data_dir, **fields):
  return data_config("tfds:jaxml_test_tiny_images", data_dir=data_dir, image_key="pixels",
                     label_key="digit", **fields)


def test_prepared_array_record_dataset_end_to_end(tiny_data_dir):
  dataset = tfds_source.load(tiny_config(tiny_data_dir))
  assert (dataset.fields["image"].shape, dataset.num_classes) == ((4, 5, 3), 3)
  assert (len(dataset.train), len(dataset.test)) == (6, 3)
  # Prepared files are shuffled by TFDS, so compare as sets of (label, PNG-exact pixels).
  batch = dataset.test.read(np.arange(3))
  assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
  pixels = np.round(batch["image"] * 255).astype(np.uint8)
  np.testing.assert_allclose(batch["image"], pixels / 255, atol=1e-6)
  got = sorted((int(y), x.tobytes()) for x, y in zip(pixels, batch["label"]))
  assert got == sorted((i % 3, tiny_image("test", i).tobytes()) for i in range(3))


def test_prepared_dataset_split_slices_and_bad_split(tiny_data_dir):
  dataset = tfds_source.load(tiny_config(tiny_data_dir, train_split="train[:4]",
                                         test_split="train[4:]"))
  assert (len(dataset.train), len(dataset.test)) == (4, 2)
  with pytest.raises(ConfigError, match=r"split 'validation'.*Unknown split 'validation'"):
    tfds_source.load(tiny_config(tiny_data_dir, test_split="validation"))


def test_image_size_resizes_the_shorter_side_and_centre_crops():
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, 20:60] = 255  # the centre 40 columns are white
  out = tfds_source.resize_center_crop(image, 20)
  assert out.shape == (20, 20, 3)
  np.testing.assert_array_equal(out[:, 1:-1], 255)  # only the centre survives the crop
  assert out[:, [0, -1]].min() >= 128  # (bilinear blends just the border pixels)
  gray = tfds_source.resize_center_crop(np.full((9, 5, 1), 7, np.uint8), 4)
  assert gray.shape == (4, 4, 1) and (gray == 7).all()
