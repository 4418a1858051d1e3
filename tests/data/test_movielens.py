"""The `movielens` source, TF-free: on TFDS's mock data, and on tiny datasets really prepared
as ArrayRecord by a MovieLens builder that generates its rows instead of downloading them."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.structured import movielens as tfds_movielens

from experiments import classifier as classifier_config
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from tests.algos.smoke import run_compiling_once

NUM_EXAMPLES = 60
MOCK_THRESHOLD = 0.5  # mock ratings are uniform in [0, 1), so 4 stars would label none liked


def data_config(**fields):
  return ml_collections.ConfigDict({"source": "movielens", **fields})


def raw_ratings(name="movielens/100k-ratings", **kwargs) -> list:
  """Every rating of the dataset, straight from TFDS, in record order."""
  source = tfds.data_source(name, split="train", download=False, **kwargs)
  return [source[i] for i in range(len(source))]


def rows_of(split, raw: list) -> np.ndarray:
  """The raw record index of each row of `split`, matched by its (unique) mock rating."""
  index = {np.float32(record["user_rating"]).item(): i for i, record in enumerate(raw)}
  assert len(index) == len(raw)  # the mock's random ratings tell the records apart
  return np.array([index[r.item()] for r in split.arrays["rating"]])


@pytest.fixture(name="mocked")
def fixture_mocked():
  """(raw records, Dataset) from `tfds.testing.mock_data`, which needs no files and no TF."""
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    yield raw_ratings(), load_dataset(data_config(like_threshold=MOCK_THRESHOLD))


def test_fields_shapes_and_dtypes(mocked):
  _, dataset = mocked
  assert dataset.name == "movielens/100k-ratings"
  assert dataset.fields["ids"].shape == (6,)  # user, movie, genre, occupation, gender, age
  assert (dataset.task.inputs, dataset.task.target, dataset.num_classes) == (("ids",), "click", 2)
  assert (len(dataset.train), len(dataset.test)) == (48, 12)  # test_fraction 0.2
  for split in (dataset.train, dataset.test):
    arrays = split.arrays
    assert set(arrays) == {"ids", "click", "rating"}
    assert arrays["ids"].dtype == np.int32 and arrays["ids"].shape == (len(split), 6)
    assert arrays["click"].dtype == np.int32 and arrays["rating"].dtype == np.float32
    assert ((0 <= arrays["ids"]) & (arrays["ids"] < 10_000)).all()


def test_labels_are_the_raw_ratings_at_the_threshold(mocked):
  raw, dataset = mocked
  liked = np.array([record["user_rating"] >= MOCK_THRESHOLD for record in raw])
  assert 0 < liked.mean() < 1
  for split in (dataset.train, dataset.test):
    np.testing.assert_array_equal(split.arrays["click"], liked[rows_of(split, raw)])


def test_split_is_a_seeded_partition_of_the_rows(mocked):
  raw, dataset = mocked
  train, test = rows_of(dataset.train, raw), rows_of(dataset.test, raw)
  assert sorted([*train, *test]) == list(range(NUM_EXAMPLES))
  assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()  # record order
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    again = load_dataset(data_config(like_threshold=MOCK_THRESHOLD))
    reseeded = load_dataset(data_config(like_threshold=MOCK_THRESHOLD, seed=1))
    halved = load_dataset(data_config(test_fraction=0.5))
  for split in ("train", "test"):
    for key, value in getattr(dataset, split).arrays.items():
      np.testing.assert_array_equal(getattr(again, split).arrays[key], value)
  assert set(rows_of(reseeded.test, raw)) != set(test)
  assert (len(halved.train), len(halved.test)) == (30, 30)


def test_small_vocab_keeps_ids_in_range():
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    dataset = load_dataset(data_config(vocab=7))
  ids = np.concatenate([dataset.train.arrays["ids"], dataset.test.arrays["ids"]])
  assert ids.min() >= 0 and ids.max() < 7
  assert len(np.unique(ids[:, 0])) > 1  # hashed, not all one bucket


@pytest.mark.parametrize("fields,says", [
    ({"source": "movielens:1m-ratings"}, "data.tfds_name"),
    ({"test_fraction": 1.0}, "data.test_fraction=1.0 must be in (0, 1)"),
    ({"test_fraction": 0.001}, "leaves an empty split"),
    ({"vocab": 0}, "data.vocab=0 must be an integer >= 1"),
    ({"like_threshold": "4"}, "data.like_threshold='4'"),
    ({"tfds_name": "movielens/100k-movies"}, "no feature(s) ['user_id', 'user_rating']"),
])
def test_bad_settings_are_config_errors(fields, says):
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    with pytest.raises(ConfigError) as error:
      load_dataset(data_config(**fields))
  assert says in str(error.value)


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(ConfigError) as error:
    load_dataset(data_config(data_dir=str(tmp_path)))
  message = str(error.value)
  assert "\n" not in message
  assert ("pip install 'jaxml[tf]' && tfds build movielens/100k-ratings "
          f"--file_format=array_record --data_dir={tmp_path}") in message


class JaxmlTestMovielens(tfds_movielens.Movielens):
  """MovieLens's own builder and feature specs, with generated rows instead of a download."""

  # No downloads, so no checksums to look up (see test_tfds_source.JaxmlTestTinyImages).
  url_infos = None
  NUM_RATINGS = 400

  def _split_generators(self, dl_manager):
    return {"train": self._generate_ratings()}

  def _generate_ratings(self):
    features = self.info.features
    for i in range(self.NUM_RATINGS):
      yield i, {key: value for key, value in fake_rating(i).items() if key in features}


def fake_rating(i: int) -> dict:
  """Rating i: 20 users, 30 movies, whole stars, some movies with no genre."""
  rng = np.random.default_rng(i)
  return {"user_id": str(i % 20), "movie_id": str(rng.integers(30)), "movie_title": "a film",
          "movie_genres": list(rng.choice(21, rng.integers(0, 3), replace=False)),
          "user_rating": float(rng.integers(1, 6)), "timestamp": i,
          "user_gender": bool(i % 20 < 8), "bucketized_user_age": float((1, 18, 25)[i % 3]),
          "user_occupation_label": i % 20 % 5, "user_occupation_text": "other",
          "user_zip_code": "00000", "raw_user_age": 30.0}


@pytest.fixture(name="prepared", scope="module")
def fixture_prepared(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  for config in ("100k-ratings", "latest-small-ratings"):
    JaxmlTestMovielens(config=config, data_dir=data_dir,
                       file_format="array_record").download_and_prepare()
  return data_dir


def load_prepared(data_dir, config="100k-ratings", **fields):
  return load_dataset(data_config(tfds_name=f"jaxml_test_movielens/{config}",
                                  data_dir=data_dir, **fields))


def test_prepared_ratings_end_to_end(prepared):
  """The real read path (strings as bytes, genre lists): likes, and ids that follow the raw
  values, one bucket per distinct value when the buckets are roomy."""
  dataset = load_prepared(prepared, vocab=1 << 30)
  raw = raw_ratings("jaxml_test_movielens/100k-ratings", data_dir=prepared)
  assert (len(dataset.train), len(dataset.test)) == (320, 80)
  ids = np.concatenate([dataset.train.arrays["ids"], dataset.test.arrays["ids"]])
  clicks = np.concatenate([dataset.train.arrays["click"], dataset.test.arrays["click"]])
  ratings = np.concatenate([dataset.train.arrays["rating"], dataset.test.arrays["rating"]])
  np.testing.assert_array_equal(clicks, ratings >= 4)
  assert sorted(ratings) == sorted(record["user_rating"] for record in raw)
  for field, count in (("user_id", 20), ("movie_id", 30), ("user_occupation_label", 5),
                       ("user_gender", 2), ("bucketized_user_age", 3)):
    column = ["user_id", "movie_id", "movie_genres", "user_occupation_label", "user_gender",
              "bucketized_user_age"].index(field)
    assert len(np.unique(ids[:, column])) == count, field
  assert len(np.unique(ids[:, 2])) == 22  # 21 genres and none (each seen in 400 ratings)
  assert len(np.unique(ids)) == 20 + 30 + 22 + 5 + 2 + 3  # fields never share a bucket


def test_a_users_bucket_is_a_fixed_hash_of_its_id(prepared):
  """Not its rank among the ids present: two datasets of the same users put them in the same
  buckets, however each is split."""
  def user_buckets(dataset):
    return set(np.concatenate([dataset.train.arrays["ids"][:, 0],
                               dataset.test.arrays["ids"][:, 0]]).tolist())
  full = user_buckets(load_prepared(prepared))
  assert len(full) == 20
  assert user_buckets(load_prepared(prepared, config="latest-small-ratings", seed=3)) == full


def test_ratings_without_demographics_have_three_fields(prepared):
  dataset = load_prepared(prepared, config="latest-small-ratings")
  assert dataset.fields["ids"].shape == (3,)  # user, movie, genre
  assert dataset.train.arrays["ids"].shape == (320, 3)


def test_smoke_variant_trains_on_mock_data(tmp_path):
  config = classifier_config.get_config("movielens,smoke")
  assert (config.data.source, config.model.name) == ("movielens", "recommender")
  config.data.like_threshold = MOCK_THRESHOLD
  config.update(num_steps=6, log_every=3, eval_every=6, checkpoint_every=6, progress=False)
  config.linear_probe.enabled = False
  with tfds.testing.mock_data(num_examples=200):
    summary = run_compiling_once(config, tmp_path)
  assert summary["step"] == 6 and np.isfinite(summary["eval/loss"])
