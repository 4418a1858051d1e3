"""Field, Task and Dataset: what a source promises about its examples, checked on construction."""

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.base import ArraySplit, Dataset, Field, Task, check_labels, image_classification
from jaxml.data.check import check_examples
from jaxml.errors import ConfigError

SPLIT = ArraySplit({"x": np.zeros((4, 3), np.float32), "y": np.arange(4, dtype=np.int32) % 2,
                    "g": np.zeros(4, np.int32), "t": np.arange(4.0)})
FIELDS = {"x": Field((3,), "float32"), "y": Field((), "int32", ("no", "yes")),
          "g": Field((), "int32"), "t": Field((), "float64")}


def test_field_and_task_normalise_their_arguments():
  field = Field([2, 3], np.float32)
  assert field == Field((2, 3), "float32") and field.dtype == "float32"
  task = Task("classification", "x", "y", 2, groups="g", timestamp="t")
  assert (task.inputs, task.groups) == (("x",), ("g",))
  assert task.fields_used() == ("x", "y", "g", "t")


@pytest.mark.parametrize("args,message", [
    (("ranking", "x", "y", 2), "choose one of"),
    (("classification", (), "y", 2), "at least one input"),
    (("classification", "x", None, 2), "needs target"),
    (("none", "x", "y", 0), "has no target"),
    (("classification", "x", "y", 0), "num_classes=0"),
    (("regression", "x", "t", 3), "num_classes=3"),
    (("partition", "x", "y", 0), "'partition' task needs step_mask"),
    (("classification", "x", "y", 2, (), None, None, "m"), "'classification' task has no "
     "step_mask"),
])
def test_bad_tasks_are_config_errors(args, message):
  with pytest.raises(ConfigError, match=message):
    Task(*args)


@pytest.mark.parametrize("fields,task,message", [
    ({**FIELDS}, Task("classification", "x", "z", 2), r"does not have"),
    ({**FIELDS, "y": Field((2,), "int32")}, Task("classification", "x", "y", 2), "integer scalar"),
    ({**FIELDS, "y": Field((), "float32")}, Task("classification", "x", "y", 2), "integer scalar"),
    ({**FIELDS}, Task("classification", "x", "y", 3), "names 2 classes"),
    ({**FIELDS}, Task("multilabel", "x", "x", 2), r"must have shape \(2,\)"),
    ({**FIELDS, "t": Field((3,), "int32", ("a", "b"))}, Task("multilabel", "x", "t", 3),
     "names 2 labels"),
    ({**FIELDS}, Task("regression", "x", "y", 0), "must be float"),
    ({**FIELDS}, Task("classification", "x", "y", 2, groups="x"), "integer scalars"),
    ({**FIELDS}, Task("classification", "x", "y", 2, timestamp="x"), "scalar field"),
    ({**FIELDS, "mask": Field((), "float32")}, Task("classification", "x", "y", 2), "reserved"),
    ({**FIELDS, "z": (3,)}, Task("classification", "x", "y", 2), "not jaxml.data.Field"),
    ({**FIELDS}, Task("partition", "x", "y", 0, step_mask="t"),
     r"partition target 'y' must be an integer sequence \[max_len\]"),
    ({**FIELDS, "s": Field((3,), "int32")}, Task("partition", "x", "s", 0, step_mask="g"),
     r"with a float step mask 'g' of the same shape, got \(3,\) int32 and \(\) int32"),
])
def test_tasks_that_do_not_fit_the_fields_are_config_errors(fields, task, message):
  with pytest.raises(ConfigError, match=message):
    Dataset(SPLIT, SPLIT, fields, task, name="toy")


def test_bad_fields_are_config_errors():
  with pytest.raises(ConfigError, match="fixed sizes"):
    Field((-1, 3), "float32")
  with pytest.raises(ConfigError, match="not a NumPy dtype"):
    Field((), "floaty")
  with pytest.raises(ConfigError, match="integer field"):
    Field((), "float32", ("a", "b"))


def test_derived_num_classes_and_read_only_fields():
  dataset = Dataset(SPLIT, SPLIT, FIELDS, Task("classification", "x", "y", 2, groups="g"))
  assert dataset.num_classes == 2
  with pytest.raises(TypeError):
    dataset.fields["x"] = Field((4,), "float32")  # the description is read-only
  windows = Dataset(SPLIT, SPLIT, {"frames": Field((5, 8, 8, 3), "float32")},
                    Task("none", "frames", None, 0))
  assert windows.num_classes == 0
  with pytest.raises(ConfigError, match="needs a classification dataset"):
    check_labels(windows, 10)


def test_check_examples_names_the_mismatch():
  check_examples(SPLIT, FIELDS, [0, 3])
  with pytest.raises(ConfigError, match=r"split has field 'y', which the dataset does not"):
    check_examples(SPLIT, {"x": FIELDS["x"]})
  with pytest.raises(ConfigError, match=r"field 'x' has examples of shape \(3,\), declared "
                                        r"\(4,\)"):
    check_examples(SPLIT, {**FIELDS, "x": Field((4,), "float32")})


def test_unequal_arrays_name_their_fields():
  with pytest.raises(ConfigError, match=r"different numbers of examples: 'x' 4, 'y' 3"):
    ArraySplit({"x": np.zeros((4, 3)), "y": np.zeros(3)})
  with pytest.raises(ConfigError, match="at least one array"):
    ArraySplit({})


def misdescribed(data_config):
  """A plug-in whose images are float64 though it describes them as float32."""
  del data_config
  split = ArraySplit({"image": np.zeros((3, 2, 2, 1)), "label": np.zeros(3, np.int32)})
  return image_classification(split, split, (2, 2, 1), 2)


def test_a_plugin_that_reads_other_than_it_describes_is_refused():
  source = "tests.data.test_base:misdescribed"
  with pytest.raises(ConfigError, match=r"misdescribed.*: train field 'image' is float64, "
                                        "declared float32"):
    load_dataset(ml_collections.ConfigDict({"source": source}))


def test_a_partition_is_a_label_sequence_with_a_step_mask():
  from jaxml.data.check import check_dataset  # pylint: disable=import-outside-toplevel
  fields = {"x": Field((3, 2), "float32"), "s": Field((3,), "int32"),
            "m": Field((3,), "float32")}
  task = Task("partition", "x", "s", 0, step_mask="m")
  assert task.fields_used() == ("x", "s", "m")
  x = np.zeros((2, 3, 2), np.float32)
  mask = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
  good = ArraySplit({"x": x, "s": np.array([[0, 7, 0], [2, 2, 1]], np.int32), "m": mask})
  check_dataset(Dataset(good, good, fields, task), "toy")  # any names >= 0
  bad = ArraySplit({"x": x, "s": np.array([[0, 1, 0], [0, -1, 1]], np.int32), "m": mask})
  with pytest.raises(ConfigError, match=r"field 's' holds -1 at example 1: its values must be "
                     ">= 0"):
    check_dataset(Dataset(good, bad, fields, task), "toy")


def test_an_integer_multilabel_target_must_hold_zeros_and_ones():
  from jaxml.data.check import check_dataset  # pylint: disable=import-outside-toplevel
  fields = {"x": Field((2,), "float32"), "t": Field((3,), "int32", ("a", "b", "c"))}
  task = Task("multilabel", "x", "t", 3)
  good = ArraySplit({"x": np.zeros((2, 2), np.float32), "t": np.array([[0, 1, 1], [1, 0, 0]],
                                                                         np.int32)})
  check_dataset(Dataset(good, good, fields, task), "toy")  # three names, values 0/1: fine
  bad = ArraySplit({"x": np.zeros((2, 2), np.float32), "t": np.array([[0, 1, 1], [2, 0, 0]],
                                                                        np.int32)})
  with pytest.raises(ConfigError, match=r"field 't' is \[2 0 0\] at example 1, outside \[0, 2\)"):
    check_dataset(Dataset(good, bad, fields, task), "toy")
