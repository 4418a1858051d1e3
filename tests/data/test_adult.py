"""The `adult` source: UCI's split, its encoding fitted on train only, groups, and an MLP on it."""

import fnmatch
import gzip
import os
import shutil
import tomllib

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments import classifier as classifier_config
from jaxml import models
from jaxml.data import load_dataset
from jaxml.data.sources import adult
from jaxml.errors import ConfigError

SHIPPED = os.path.join(os.path.dirname(adult.__file__), "..", "files", "adult")


def config(**fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"source": "adult", **fields})


@pytest.fixture(scope="module")
def dataset():
  return load_dataset(config())


def test_uci_split_sizes_label_balance_and_task(dataset):
  assert (len(dataset.train), len(dataset.test)) == (32_561, 16_281)
  assert dataset.train.arrays["income"].mean() == pytest.approx(0.2408, abs=5e-4)  # 7,841
  assert dataset.test.arrays["income"].mean() == pytest.approx(0.2362, abs=5e-4)
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes, task.groups) == (
      "classification", ("features",), "income", 2, ("sex", "race"))
  assert dataset.fields["features"].shape == (108,) and dataset.num_classes == 2
  assert dataset.fields["income"].categories == ("<=50K", ">50K")
  assert dataset.fields["sex"].categories == ("Female", "Male")
  assert dataset.fields["race"].categories[0] == "White"


# Known rows (0-based, comment line skipped), read off the files: (split, row, sex, race, income).
KNOWN = [("train", 0, "Male", "White", False), ("train", 4, "Female", "Black", False),
         ("train", 7, "Male", "White", True), ("train", 11, "Male", "Asian-Pac-Islander", True),
         ("test", 0, "Male", "Black", False), ("test", 2, "Male", "White", True)]


@pytest.mark.parametrize("split,row,sex,race,rich", KNOWN)
def test_groups_and_labels_decode_known_rows(dataset, split, row, sex, race, rich):
  example = getattr(dataset, split).read(np.array([row]))
  fields = dataset.fields
  assert fields["sex"].categories[example["sex"][0]] == sex
  assert fields["race"].categories[example["race"][0]] == race
  assert example["income"][0] == int(rich)


def test_first_row_encodes_as_its_values(dataset):
  train = adult.read_table("", "train")
  encoding = adult.Encoding.fit(train)
  names = encoding.names()
  features = dataset.train.arrays["features"][0]
  hot = {names[i] for i in np.flatnonzero(features[len(adult.NUMERIC):])
         + len(adult.NUMERIC)}
  assert hot == {"workclass=State-gov", "education=Bachelors", "marital-status=Never-married",
                 "occupation=Adm-clerical", "relationship=Not-in-family", "race=White",
                 "sex=Male", "native-country=United-States"}
  ages = train["age"].astype(float)
  assert features[names.index("age")] == pytest.approx((39 - ages.mean()) / ages.std(), rel=1e-5)
  assert "workclass=?" in names  # missing values are a category of their own
  numeric = dataset.train.arrays["features"][:, :len(adult.NUMERIC)]
  np.testing.assert_allclose(numeric.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(numeric.std(0), 1, atol=1e-4)


def test_the_test_split_does_not_leak_into_the_encoding(dataset, tmp_path):
  """A user copy whose test file is wildly different leaves every train feature unchanged."""
  shutil.copy(os.path.join(SHIPPED, "adult.data.gz"), tmp_path / "adult.data.gz")
  with gzip.open(os.path.join(SHIPPED, "adult.test.gz"), "rt") as f:
    lines = f.read().splitlines()
  changed = [lines[0]]
  for line in lines[1:]:
    values = line.split(", ")
    if len(values) == len(adult.COLUMNS):
      values[0] = str(int(values[0]) * 10)  # ages far outside train's
      values[13] = "Atlantis"  # a country train never saw
    changed.append(", ".join(values))
  (tmp_path / "adult.test").write_text("\n".join(changed) + "\n")
  mine = load_dataset(config(dir=str(tmp_path)))
  np.testing.assert_array_equal(mine.train.arrays["features"], dataset.train.arrays["features"])
  names = adult.Encoding.fit(adult.read_table("", "train")).names()
  countries = [i for i, n in enumerate(names) if n.startswith("native-country=")]
  assert not mine.test.arrays["features"][:, countries].any()  # unseen: all zeros
  age = names.index("age")
  np.testing.assert_array_less(dataset.test.arrays["features"][:, age],
                               mine.test.arrays["features"][:, age] + 1e-6)


def test_drop_leaves_columns_out_of_the_features():
  dataset = load_dataset(config(drop=("sex", "race", "fnlwgt")))
  assert dataset.fields["features"].shape == (108 - 2 - 5 - 1,)
  assert "sex" in dataset.fields  # still a group, only not a feature
  with pytest.raises(ConfigError, match="not feature columns"):
    load_dataset(config(drop=("income",)))


def test_bad_user_copies_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="neither adult.data nor adult.data.gz"):
    load_dataset(config(dir=str(tmp_path)))
  (tmp_path / "adult.data").write_text("39, State-gov, 77516\n")
  with pytest.raises(ConfigError, match=r"adult.data:1 has 3 values, not 15"):
    load_dataset(config(dir=str(tmp_path)))


def test_an_mlp_trains_on_a_batch_of_features(dataset):
  """`models.create` takes the flat input shape; a few steps lower the loss."""
  model = models.create(ml_collections.ConfigDict({"name": "mlp", "hidden": (32,)}),
                        num_classes=dataset.num_classes,
                        input_shape=dataset.fields["features"].shape, rngs=nnx.Rngs(0))
  batch = dataset.train.read(np.arange(256))
  x, y = jnp.asarray(batch[dataset.task.inputs[0]]), jnp.asarray(batch[dataset.task.target])
  assert model(x).shape == (256, 2)
  graphdef, params = nnx.split(model)
  optimizer = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  losses = []
  for _ in range(20):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.6 * losses[0]


def test_classifier_config_has_an_adult_variant():
  config_ = classifier_config.get_config("adult,smoke")
  assert (config_.data.source, config_.model.name) == ("adult", "mlp")
  assert not (config_.augment.crop_pad or config_.augment.flip or config_.augment.noise_std)
  assert config_.num_steps == classifier_config.get_config("smoke").num_steps
  with pytest.raises(ConfigError, match="exclude each other"):
    classifier_config.get_config("adult,cifar10")


def test_every_shipped_data_file_is_package_data():
  """`pip install .` ships what pyproject's package-data globs match (checked in a wheel)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
  with open(os.path.join(root, "pyproject.toml"), "rb") as f:
    globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["jaxml.data"]
  data = os.path.dirname(os.path.dirname(adult.__file__))
  shipped = [os.path.relpath(os.path.join(d, name), data)
             for d, _, names in os.walk(os.path.join(data, "files")) for name in names]
  assert {"files/adult/README.md", "files/adult/adult.data.gz"} <= set(shipped)
  assert all(any(fnmatch.fnmatch(path, g) for g in globs) for path in shipped), shipped
