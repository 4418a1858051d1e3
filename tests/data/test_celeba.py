"""The `celeba` source, TF-free: on TFDS's mock CelebA, and on a tiny CelebA really prepared as
ArrayRecord by CelebA's own builder with generated faces (flat colours that name the record)."""

import io

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core.features import image_feature
from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as tfds_celeba

from jaxml.data import load_dataset
from jaxml.data.check import check_examples
from jaxml.data.sources import celeba
from jaxml.errors import ConfigError

NUM_MOCK = 12
FIELDS = {"image": ((64, 64, 3), "float32"), "label": ((), "int32"),
          "attribute": ((), "int32"), "aligned": ((), "int32"), "group": ((), "int32")}


def data_config(**fields):
  return ml_collections.ConfigDict({"source": "celeba", **fields})


def encode_with_pil(self, np_image):
  buffer = io.BytesIO()
  Image.fromarray(np_image).save(buffer, format=self.encoding_format)
  return buffer.getvalue()


@pytest.fixture(name="mock_celeba")
def fixture_mock_celeba(monkeypatch):
  """TFDS's mock CelebA. The source reads records serialized (RAW_BYTES), and to serialize
  its random images the mock encodes them with tf.image.encode_jpeg, which needs TensorFlow;
  without it, encode them with PIL instead (the same bytes a prepared dataset holds)."""
  monkeypatch.setattr(image_feature._ImageEncoder, "_encode_image", encode_with_pil)  # pylint: disable=protected-access
  with tfds.testing.mock_data(num_examples=NUM_MOCK):
    yield


def raw_attributes(split: str, keys=("Blond_Hair", "Male"), **kwargs) -> np.ndarray:
  """[n, len(keys)] 0/1 attributes straight from TFDS (its own decoding), in record order."""
  source = tfds.data_source(kwargs.pop("name", "celeb_a"), split=split, download=False,
                            **kwargs)
  return np.array([[int(source[i]["attributes"][k]) for k in keys]
                   for i in range(len(source))])


def test_mock_fields_shapes_and_dtypes(mock_celeba):
  dataset = load_dataset(data_config())
  assert dataset.name == "celeba"
  assert {k: (f.shape, f.dtype) for k, f in dataset.fields.items()} == FIELDS
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes, task.groups) == (
      "classification", ("image",), "label", 2, ("group", "aligned"))
  assert dataset.fields["group"].categories == (
      "not Blond_Hair/not Male", "not Blond_Hair/Male", "Blond_Hair/not Male", "Blond_Hair/Male")
  assert (len(dataset.train), len(dataset.test)) == (NUM_MOCK, NUM_MOCK)
  for split in (dataset.train, dataset.test):
    check_examples(split, dataset.fields, np.arange(len(split)))
    images = split.read(np.arange(len(split)))["image"]
    assert 0 <= images.min() < images.max() <= 1
  empty = dataset.train.read(np.zeros(0, np.int64))
  assert {k: v.shape for k, v in empty.items()} == {
      k: (0, *shape) for k, (shape, _) in FIELDS.items()}
  with pytest.raises(IndexError):
    dataset.train.read(np.array([NUM_MOCK]))


def test_mock_groups_follow_the_attributes(mock_celeba):
  dataset = load_dataset(data_config(target="Smiling", attribute="Wearing_Hat"))
  raw = raw_attributes("train", ("Smiling", "Wearing_Hat"))
  points_at = celeba.shortcut_values(raw[:, 0], raw[:, 1])
  batch = dataset.train.read(np.arange(NUM_MOCK))
  y, a = raw[:, 0], raw[:, 1]
  np.testing.assert_array_equal(batch["label"], y)
  np.testing.assert_array_equal(batch["attribute"], a)
  np.testing.assert_array_equal(batch["group"], 2 * y + a)
  np.testing.assert_array_equal(batch["aligned"], a == points_at[y])
  assert dataset.fields["label"].categories == ("not Smiling", "Smiling")


def test_mock_eval_split_and_max_examples(mock_celeba, monkeypatch):
  opened = []
  data_source = tfds.data_source
  monkeypatch.setattr(tfds, "data_source",
                      lambda name, split, **kw: opened.append(split) or data_source(
                          name, split=split, **kw))
  load_dataset(data_config())
  dataset = load_dataset(data_config(eval_split="validation", max_examples=5, image_size=32))
  assert opened == ["train", "test", "train", "validation"]
  assert (len(dataset.train), len(dataset.test)) == (5, 5)
  assert dataset.test.read(np.arange(5))["image"].shape == (5, 32, 32, 3)


@pytest.mark.parametrize("fields,says", [
    ({"attribute": "male"}, "data.attribute='male' is not a CelebA attribute; did you mean Male"),
    ({"target": "Hair"}, "data.target='Hair' is not a CelebA attribute"),
    ({"target": "Male"}, "data.target and data.attribute are both 'Male'"),
    ({"image_size": -1}, "data.image_size=-1 must be an integer >= 0"),
    ({"max_examples": 1.5}, "data.max_examples=1.5"),
    ({"eval_split": "val"}, "data.eval_split='val': choose test or validation"),
])
def test_bad_settings_are_one_config_error(mock_celeba, fields, says):
  with pytest.raises(ConfigError) as error:
    load_dataset(data_config(**fields))
  message = str(error.value)
  assert says in message and "\n" not in message
  if "CelebA attribute" in message:
    assert "Blond_Hair, Male, Smiling" in message  # a few valid names


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(ConfigError) as error:
    load_dataset(data_config(data_dir=str(tmp_path)))
  assert ("tfds build celeb_a --file_format=array_record "
          f"--data_dir={tmp_path}") in str(error.value)


def test_shortcut_values_pair_each_class_with_its_over_represented_value():
  # CelebA's train: women are the majority of both classes, but far more so of blond faces.
  labels = np.repeat([0, 0, 1, 1], [716, 669, 229, 14])
  male = np.repeat([0, 1, 0, 1], [716, 669, 229, 14])
  np.testing.assert_array_equal(celeba.shortcut_values(labels, male), [1, 0])
  np.testing.assert_array_equal(celeba.shortcut_values(labels, 1 - male), [0, 1])
  np.testing.assert_array_equal(celeba.shortcut_values(labels, np.zeros_like(labels)), [0, 1])


class JaxmlTestCelebA(tfds_celeba.Builder):
  """CelebA's builder and feature specs, with generated faces instead of a download: record i
  of a split is a flat colour (6 i, SPLIT_GREEN[split], 128); a quarter of each split is
  blond, a quarter of those men, and two thirds of the rest men (CelebA's direction)."""

  url_infos = None  # no downloads, so no checksums to look up
  pkg_dir_path = tfds_celeba.Builder._get_pkg_dir_path()  # its README and citations
  SIZES = {"train": 40, "validation": 12, "test": 16}
  SPLIT_GREEN = {"train": 0, "validation": 100, "test": 200}

  def _split_generators(self, dl_manager):
    return {split: self._faces(split, n) for split, n in self.SIZES.items()}

  def _faces(self, split, n):
    for i in range(n):
      pixels = np.full((218, 178, 3), (6 * i, self.SPLIT_GREEN[split], 128), np.uint8)
      buffer = io.BytesIO()
      Image.fromarray(pixels).save(buffer, format="jpeg", quality=95)
      attributes = dict.fromkeys(tfds_celeba.ATTR_HEADINGS, False)
      attributes["Blond_Hair"] = i % 4 == 0
      attributes["Male"] = i % 16 == 0 if i % 4 == 0 else i % 2 == 1
      yield i, {"image": buffer.getvalue(), "attributes": attributes,
                "landmarks": dict.fromkeys(tfds_celeba.LANDMARK_HEADINGS, 0),
                "identity": {"Identity_No": i}}


@pytest.fixture(name="prepared", scope="module")
def fixture_prepared(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  JaxmlTestCelebA(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


@pytest.mark.parametrize("eval_split", ["test", "validation"])
def test_prepared_faces_end_to_end(prepared, eval_split):
  """The real read path: records, their labels and groups, images resized from 218 x 178."""
  dataset = load_dataset(data_config(tfds_name="jaxml_test_celeb_a", data_dir=prepared,
                                     eval_split=eval_split))
  sizes = JaxmlTestCelebA.SIZES
  assert (len(dataset.train), len(dataset.test)) == (sizes["train"], sizes[eval_split])
  for name, split in (("train", dataset.train), (eval_split, dataset.test)):
    raw = raw_attributes(name, name="jaxml_test_celeb_a", data_dir=prepared)
    rows = np.arange(len(split))[::-1]  # any order: each record is read where asked
    batch = split.read(rows)
    assert batch["image"].shape == (len(rows), 64, 64, 3)
    colour = batch["image"].mean(axis=(1, 2)) * 255
    # TFDS shuffles records at preparation: record r is the face generated as i = red / 6.
    generated = np.round(colour[:, 0] / 6).astype(int)
    np.testing.assert_allclose(colour[:, 0], 6 * generated, atol=2)
    np.testing.assert_allclose(colour[:, 1:], np.broadcast_to(
        [JaxmlTestCelebA.SPLIT_GREEN[name], 128], (len(rows), 2)), atol=2)
    np.testing.assert_array_equal(batch["label"], generated % 4 == 0)
    np.testing.assert_array_equal(np.c_[batch["label"], batch["attribute"]], raw[rows])
    # Blond pairs with female, not blond with male: aligned are groups 1 and 2.
    np.testing.assert_array_equal(batch["aligned"], np.isin(batch["group"], (1, 2)))


def test_prepared_max_examples_reads_the_first_records(prepared):
  full = load_dataset(data_config(tfds_name="jaxml_test_celeb_a", data_dir=prepared))
  few = load_dataset(data_config(tfds_name="jaxml_test_celeb_a", data_dir=prepared,
                                 max_examples=9, image_size=0))
  assert (len(few.train), len(few.test)) == (9, 9)
  assert few.fields["image"].shape == (218, 178, 3)
  batch, first = few.train.read(np.arange(9)), full.train.read(np.arange(9))
  assert batch["image"].shape == (9, 218, 178, 3)
  for key in ("label", "attribute", "group"):
    np.testing.assert_array_equal(batch[key], first[key])
