"""The uis-rnn .npz reader: small archives written here in google/uis-rnn's toy-data format
(a concatenated training sequence with "<utterance>_<speaker>" labels; per-utterance object
arrays for test) read into the d-vector layout, and each kind of bad file one ConfigError."""

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.check import check_examples
from jaxml.errors import ConfigError

DIM = 4
# Training utterances: speaker labels per segment (speaker names may hold "_": the utterance
# is the text before the first one).
TRAIN = [["spk_b", "spk_b", "a", "spk_b", "c"], ["x", "y", "y"], ["q", "q", "q", "r", "q", "s"]]
TEST = [["9", "9", "3"], ["1", "2", "1", "0", "2", "2", "2"]]


def sequences(labelled, seed):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((len(labels), DIM)) for labels in labelled]


def objects(items):
  """A 1-D object array holding `items` (np.array would stack equal shapes)."""
  out = np.empty(len(items), dtype=object)
  for i, item in enumerate(items):
    out[i] = item
  return out


def concatenated(labelled, seed=0):
  """uis-rnn's training arrays: rows of every utterance, labels "<utterance>_<speaker>"."""
  return {"train_sequence": np.concatenate(sequences(labelled, seed)),
          "train_cluster_id": np.array([f"u{i}x_{label}" for i, labels in enumerate(labelled)
                                        for label in labels])}


def per_utterance(labelled, seed=1, prefix="test"):
  return {f"{prefix}_sequences": objects(sequences(labelled, seed)),
          f"{prefix}_cluster_ids": objects([np.array(labels) for labels in labelled])}


def write(path, arrays):
  np.savez(path, **arrays)
  return str(path)


def load(train, test=None, **extra):
  config = {"source": f"uisrnn:{train}", **extra}
  if test is not None:
    config["test_path"] = test
  return load_dataset(ml_collections.ConfigDict(config))


@pytest.fixture
def files(tmp_path):
  return (write(tmp_path / "train.npz", concatenated(TRAIN)),
          write(tmp_path / "test.npz", per_utterance(TEST)))


def test_reads_utterances_into_the_dvector_layout(files):
  dataset = load(*files)
  assert dataset.name == "uisrnn"
  assert {k: (f.shape, f.dtype) for k, f in dataset.fields.items()} == {
      "embeddings": ((7, DIM), "float32"), "speakers": ((7,), "int32"),
      "step_mask": ((7,), "float32"), "num_speakers": ((), "int32")}
  assert (dataset.task.kind, dataset.task.inputs, dataset.task.target) == (
      "partition", ("embeddings",), "speakers")
  train, test = dataset.train.arrays, dataset.test.arrays
  check_examples(dataset.train, dataset.fields, np.arange(3))
  np.testing.assert_array_equal(train["speakers"], [[0, 0, 1, 0, 2, 0, 0], [0, 1, 1, 0, 0, 0, 0],
                                                    [0, 0, 0, 1, 0, 2, 0]])
  np.testing.assert_array_equal(train["num_speakers"], [3, 2, 3])
  np.testing.assert_array_equal(train["step_mask"].sum(axis=1), [5, 3, 6])
  np.testing.assert_array_equal(test["speakers"], [[0, 0, 1, 0, 0, 0, 0],
                                                   [0, 1, 0, 2, 1, 1, 1]])
  np.testing.assert_array_equal(test["num_speakers"], [2, 3])
  for arrays, labelled, seed in ((train, TRAIN, 0), (test, TEST, 1)):
    for i, x in enumerate(sequences(labelled, seed)):
      np.testing.assert_array_equal(arrays["embeddings"][i, :len(x)], x.astype(np.float32))
      assert not arrays["embeddings"][i, len(x):].any()


def test_per_utterance_training_lists_and_one_file_read_the_same(tmp_path, files):
  expected = load(*files)
  both = write(tmp_path / "both.npz", {**per_utterance(TRAIN, seed=0, prefix="train"),
                                       **per_utterance(TEST)})
  dataset = load(both)  # no data.test_path: the test lists of the same archive
  for name in ("train", "test"):
    for key, value in getattr(expected, name).arrays.items():
      np.testing.assert_array_equal(getattr(dataset, name).arrays[key], value)


def test_equal_length_test_utterances_stacked_and_byte_labels(tmp_path, files):
  labelled = [["a", "b", "a"], ["c", "c", "d"]]
  stacked = {"test_sequences": np.stack(sequences(labelled, 1)),
             "test_cluster_ids": np.array(labelled, dtype="S")}
  dataset = load(files[0], write(tmp_path / "stacked.npz", stacked))
  np.testing.assert_array_equal(dataset.test.arrays["speakers"][:, :3], [[0, 1, 0], [0, 0, 1]])


def bad(arrays, change):
  return {**arrays, **change}


@pytest.mark.parametrize("which, change, message", [
    ("train", {"train_cluster_id": concatenated(TRAIN)["train_cluster_id"][:-1]},
     "train_cluster_id has 13 labels but its sequence has 14 segments"),
    ("train", {"train_sequence": np.zeros((0, DIM)), "train_cluster_id": np.array([], "U1")},
     "train_sequence is empty"),
    ("train", {"train_cluster_id": np.array(["u0_a"] * 7 + ["nounderscore"] * 7)},
     "label 'nounderscore' \\(row 7\\) is not '<utterance>_<speaker>'"),
    ("train", {"train_cluster_id": np.array(["u0_a"] * 5 + ["u1_a"] * 4 + ["u0_b"] * 5)},
     "utterance 'u0' has rows apart \\(from row 0 and again from row 9\\)"),
    ("train", {"train_sequence": np.full((14, DIM), np.nan)}, "train_sequence holds NaN"),
    ("test", {"test_sequences": objects(sequences([["a"] * 3, ["b"] * 2], 2)[:1] +
                                        [np.zeros((7, DIM + 1))])},
     "test utterances have different dimensions \\[4, 5\\]"),
    ("test", {"test_sequences": objects(sequences(TEST, 1)[:1])},
     "holds 1 test_sequences but 2 test_cluster_ids"),
    ("test", {"test_cluster_ids": objects([np.array(TEST[0]), np.array(TEST[1][:-1])])},
     "test_cluster_ids\\[1\\] has 6 labels but its sequence has 7 segments"),
    ("test", {"test_sequences": objects([np.zeros((3, DIM)), np.zeros((0, DIM))])},
     "test_sequences\\[1\\] is empty"),
    ("test", {"test_sequences": objects([]), "test_cluster_ids": objects([])},
     "holds no test utterances"),
])
def test_a_bad_archive_is_one_config_error(tmp_path, which, change, message):
  arrays = {"train": concatenated(TRAIN), "test": per_utterance(TEST)}
  arrays[which] = bad(arrays[which], change)
  paths = [write(tmp_path / f"{name}.npz", arrays[name]) for name in ("train", "test")]
  with pytest.raises(ConfigError, match=f"uisrnn: .*{message}"):
    load(*paths)


def test_missing_arrays_files_and_dimensions_are_config_errors(tmp_path, files):
  train, test = files
  only_ids = write(tmp_path / "ids.npz", {"test_cluster_ids": per_utterance(TEST)[
      "test_cluster_ids"]})
  with pytest.raises(ConfigError, match="lacks test data: it needs test_sequences and "
                                        "test_cluster_ids; it holds test_cluster_ids"):
    load(train, only_ids)
  with pytest.raises(ConfigError, match="train.npz lacks test data"):
    load(train)  # no data.test_path, and no test lists in the training archive
  with pytest.raises(ConfigError, match="lacks train data: it needs train_sequence and "
                                        "train_cluster_id, or train_sequences"):
    load(test, test)
  wide = write(tmp_path / "wide.npz", {
      "test_sequences": objects([np.zeros((2, DIM + 2))]),
      "test_cluster_ids": objects([np.array(["a", "b"])])})
  with pytest.raises(ConfigError, match="training d-vectors .* have dimension 4 but test "
                                        "ones .*wide.npz\\) 6"):
    load(train, wide)
  with pytest.raises(ConfigError, match="is not a file"):
    load(str(tmp_path / "absent.npz"), test)
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not an archive")
  with pytest.raises(ConfigError, match="cannot be read as a .npz archive"):
    load(str(garbage), test)
