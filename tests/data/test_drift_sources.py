"""The drift sources: periods split Eval-Fix, no drift at rate 0, the stated drift otherwise."""

import os

import ml_collections
import numpy as np
import pytest
import scipy.ndimage
from scipy import stats
from sklearn.linear_model import LogisticRegression

from jaxml.data import drift, load_dataset, spurious
from jaxml.data.check import check_examples
from jaxml.data.sources import drifting_digits, drifting_mixture, periods
from jaxml.errors import ConfigError
from jaxml.evaluators import groups as groups_lib

INPUT = {"drifting_mixture": ("features", (2,)), "drifting_digits": ("image", (8, 8, 1))}
P_VALUE = 1e-3  # generous: the draws are seeded, so a pass is a pass every time


def load(source, **fields):
  return load_dataset(ml_collections.ConfigDict({"source": source, **fields}))


def by_period(split):
  arrays = split.arrays
  return {int(p): {k: v[arrays["period"] == p] for k, v in arrays.items()}
          for p in np.unique(arrays["period"])}


@pytest.mark.parametrize("source", sorted(INPUT))
def test_fields_task_and_eval_fix_split(source):
  dataset = load(source, periods=6, train_periods=4, examples_per_period=40)
  name, shape = INPUT[source]
  num_classes = 2 if source == "drifting_mixture" else 10
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes, task.timestamp,
          task.groups) == ("classification", (name,), "label", num_classes, "period",
                           ("period", "cluster"))
  assert {k: (f.shape, f.dtype) for k, f in dataset.fields.items()} == {
      name: (shape, "float32"), "label": ((), "int32"), "period": ((), "int32"),
      "cluster": ((), "int32")}
  assert dataset.fields["period"].categories == tuple(str(p) for p in range(6))
  assert len(dataset.fields["cluster"].categories) == 4
  for split, expected in ((dataset.train, range(4)), (dataset.test, range(4, 6))):
    check_examples(split, dataset.fields, np.arange(len(split)))
    period = split.arrays["period"]
    assert np.all(np.diff(period) >= 0)  # sorted by time
    np.testing.assert_array_equal(np.bincount(period)[list(expected)], 40)
    assert set(period) == set(expected)
  if name == "image":
    images = np.concatenate([dataset.train.arrays["image"], dataset.test.arrays["image"]])
    assert images.min() >= 0 and images.max() <= 1
    labels = dataset.train.arrays["label"]
    np.testing.assert_array_equal(dataset.train.arrays["cluster"], labels % 4)
    assert dataset.fields["cluster"].categories == ("0_4_8", "1_5_9", "2_6", "3_7")


def test_ages_count_periods_back_from_the_end_of_training():
  np.testing.assert_array_equal(drift.ages([0, 3, 9, 10, 14], 10), [9, 6, 0, -1, -5])
  assert drift.ages(np.array([2], np.int32), 3).dtype == np.int32


@pytest.mark.parametrize("source", sorted(INPUT))
def test_a_period_is_the_same_whatever_the_other_periods_and_the_rates(source):
  name = INPUT[source][0]
  base = load(source, periods=8, train_periods=5, examples_per_period=30)
  longer = load(source, periods=10, train_periods=5, examples_per_period=30)
  for key in base.fields:
    np.testing.assert_array_equal(base.train.arrays[key], longer.train.arrays[key])
    np.testing.assert_array_equal(base.test.arrays[key],
                                  longer.test.arrays[key][:len(base.test)])
  still = load(source, periods=8, train_periods=5, examples_per_period=30, rates=(0, 0, 0, 0))
  np.testing.assert_array_equal(base.train.arrays["cluster"], still.train.arrays["cluster"])
  if source == "drifting_mixture":  # the rates move the boundary, not the points
    np.testing.assert_array_equal(base.train.arrays[name], still.train.arrays[name])
  other = load(source, periods=8, train_periods=5, examples_per_period=30, seed=1)
  assert not np.array_equal(base.train.arrays[name], other.train.arrays[name])
  validation = load(source, periods=8, train_periods=5, examples_per_period=30,
                    eval_split="validation")
  np.testing.assert_array_equal(base.train.arrays[name], validation.train.arrays[name])
  assert not np.array_equal(base.test.arrays[name], validation.test.arrays[name])


@pytest.mark.parametrize("source, expected", [
    ("drifting_mixture", (0.0, 0.05, 0.15, 0.3)), ("drifting_digits", (0.0, 3.0, 6.0, 10.0))])
def test_drift_rates_are_the_configured_ones(source, expected):
  module = {"drifting_mixture": drifting_mixture, "drifting_digits": drifting_digits}[source]
  np.testing.assert_array_equal(module.drift_rates(ml_collections.ConfigDict()), expected)
  np.testing.assert_array_equal(module.drift_rates({"rates": (0.5, 0)}), [0.5, 0])
  np.testing.assert_array_equal(drifting_digits.drift_rates({"transform": "shear"}),
                                drifting_digits.DEFAULT_RATES["shear"])


def _mixture_periods(rates, **fields):
  dataset = load("drifting_mixture", rates=rates, periods=12, train_periods=8, **fields)
  return {**by_period(dataset.train), **by_period(dataset.test)}


def _same_distribution(first, second, num_clusters):
  """p-values of two-sample tests of (cluster, label, features) between two periods."""
  table = lambda data: np.bincount(data["cluster"] * 2 + data["label"], minlength=2 * num_clusters)
  p_values = [stats.chi2_contingency(np.stack([table(first), table(second)]))[1]]
  for c in range(num_clusters):
    for y in (0, 1):
      a, b = (data["features"][(data["cluster"] == c) & (data["label"] == y)]
              for data in (first, second))
      p_values += [stats.ks_2samp(u, v).pvalue for u, v in zip(a.T, b.T)]
  return np.array(p_values)


def test_mixture_periods_are_identically_distributed_without_drift_and_not_with_it():
  still = _mixture_periods((0.0, 0.0, 0.0), examples_per_period=1500)
  for period in range(1, 12):
    assert _same_distribution(still[0], still[period], 3).min() > P_VALUE / 40, period
  moving = _mixture_periods((0.0, 0.0, 0.3), examples_per_period=1500)
  assert _same_distribution(moving[0], moving[11], 3).min() < 1e-6  # the test has power


def test_mixture_labels_are_the_side_of_each_clusters_turning_boundary():
  values = drifting_mixture.settings(ml_collections.ConfigDict({"dim": 3}))
  dataset = load("drifting_mixture", dim=3)
  centres = drifting_mixture.centres(values)
  np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 4.0)
  for split in (dataset.train, dataset.test):
    x, c = split.arrays["features"].astype(np.float64), split.arrays["cluster"]
    angle = np.pi / 2 * c + values["rates"][c] * split.arrays["period"]
    offset = x - centres[c]
    side = np.cos(angle) * offset[:, 0] + np.sin(angle) * offset[:, 1]
    np.testing.assert_array_equal(split.arrays["label"], (side > 0).astype(np.int32))
    assert abs(offset.mean()) < 0.1 and abs(offset.std() - 1) < 0.05


def test_mixture_bayes_rule_turns_by_rate_times_period():
  """Logistic regression on a large sample of one cluster and period finds the boundary;
  its angle moves from period 0's by rates[c] * p."""
  rates = (0.0, 0.05, 0.15, 0.3)
  data = _mixture_periods(rates, examples_per_period=6000)
  centres = drifting_mixture.centres({"rates": np.array(rates), "dim": 2, "spread": 4.0})

  def fitted_angle(period, cluster):
    rows = data[period]["cluster"] == cluster
    x = data[period]["features"][rows] - centres[cluster]
    coef = LogisticRegression(C=100.0).fit(x, data[period]["label"][rows]).coef_[0]
    return np.arctan2(coef[1], coef[0])

  wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi
  for c, rate in enumerate(rates):
    start = fitted_angle(0, c)
    for period in (4, 11):  # a training and a test period
      assert abs(wrap(fitted_angle(period, c) - start - rate * period)) < 0.05, (c, period)


def _digit_pools(split_seed=0):
  images, _ = spurious.digit_splits(split_seed)
  return {split: {image.tobytes() for image in pool} for split, pool in images.items()}


def test_digits_without_drift_are_pool_digits_identically_distributed_over_periods():
  dataset = load("drifting_digits", rates=(0.0, 0.0), periods=8, train_periods=6,
                 examples_per_period=300)
  pools = _digit_pools()
  _, pool_labels = spurious.digit_splits(0)
  for split, pool in ((dataset.train, "train"), (dataset.test, "test")):
    images = split.arrays["image"][..., 0]
    assert all(image.tobytes() in pools[pool] for image in images)  # untransformed
    assert not any(image.tobytes() in pools["validation"] for image in images)
  data = {**by_period(dataset.train), **by_period(dataset.test)}
  table = np.stack([np.bincount(data[p]["label"], minlength=10) for p in range(8)])
  assert stats.chi2_contingency(table)[1] > P_VALUE
  rows = np.arange(8)[:, None]
  for period in range(1, 8):  # ink, and where it sits: the mean image's moments
    for statistic in (lambda im: im.sum((1, 2, 3)), lambda im: (im[..., 0].sum(2) * rows.T).sum(1),
                      lambda im: (im[..., 0].sum(1) * rows.T).sum(1)):
      p_value = stats.ks_2samp(statistic(data[0]["image"]), statistic(data[period]["image"])).pvalue
      assert p_value > P_VALUE / 20, period
  mean_image = lambda p: data[p]["image"].mean(0)
  assert np.abs(mean_image(0) - mean_image(7)).max() < 0.12
  np.testing.assert_allclose(np.bincount(pool_labels["train"]) / 1077,
                             table[:6].sum(0) / 1800, atol=0.02)


def test_digits_rotation_equals_scipy_rotating_the_drawn_digit_by_rate_times_period():
  fields = {"periods": 7, "train_periods": 5, "examples_per_period": 40}
  still = load("drifting_digits", rates=(0.0, 0.0, 0.0, 0.0), **fields)
  turned = load("drifting_digits", rates=(0.0, 3.0, 6.0, 10.0), **fields)
  for first, second in ((still.train, turned.train), (still.test, turned.test)):
    np.testing.assert_array_equal(first.arrays["label"], second.arrays["label"])
    angles = np.array([0.0, 3.0, 6.0, 10.0])[second.arrays["cluster"]] * second.arrays["period"]
    expected = np.stack([scipy.ndimage.rotate(image[..., 0], angle, reshape=False, order=1,
                                              mode="grid-constant")
                         for image, angle in zip(first.arrays["image"], angles)])
    np.testing.assert_allclose(second.arrays["image"][..., 0], np.clip(expected, 0, 1),
                               atol=1e-5)
    unmoved = second.arrays["cluster"] == 0
    np.testing.assert_array_equal(second.arrays["image"][unmoved], first.arrays["image"][unmoved])
    assert np.abs(second.arrays["image"][~unmoved] - first.arrays["image"][~unmoved]).max() > 0.5


def test_digits_shear_shifts_each_row_by_rate_times_period_times_its_offset():
  fields = {"periods": 5, "train_periods": 3, "examples_per_period": 30, "transform": "shear"}
  still = load("drifting_digits", rates=(0.0, 0.0), **fields)
  sheared = load("drifting_digits", rates=(0.0, 0.1), **fields)
  for first, second in ((still.train, sheared.train), (still.test, sheared.test)):
    amounts = np.array([0.0, 0.1])[second.arrays["cluster"]] * second.arrays["period"]
    for image, got, amount in zip(first.arrays["image"][..., 0], second.arrays["image"][..., 0],
                                  amounts):
      expected = [scipy.ndimage.shift(row, amount * (r - 3.5), order=1, mode="grid-constant")
                  for r, row in enumerate(image)]
      np.testing.assert_allclose(got, np.clip(expected, 0, 1), atol=1e-5)


def test_per_period_accuracy_is_reported_for_the_future_periods_only():
  """What the runner's group metrics make of the period field: each test period's accuracy,
  training periods absent, and their mean: here the rule of the last training period, which
  is right on the still cluster and wrong more and more often on the turning one."""
  dataset = load("drifting_mixture", rates=(0.0, 0.3), periods=10, train_periods=6,
                 examples_per_period=2000)
  arrays = dataset.test.arrays
  values = drifting_mixture.settings({"rates": (0.0, 0.3)})
  c = arrays["cluster"]
  angle = drifting_mixture.boundary_angles(values, 5)[c]
  offset = arrays["features"] - drifting_mixture.centres(values)[c]
  predictions = (np.cos(angle) * offset[:, 0] + np.sin(angle) * offset[:, 1] > 0)
  categories = dataset.fields["period"].categories
  report = groups_lib.group_accuracy(predictions.astype(np.int32), arrays["label"],
                                     arrays["period"], len(categories))
  np.testing.assert_array_equal(report.present, [False] * 6 + [True] * 4)
  accuracy = report.accuracy[6:]
  assert np.all(np.diff(accuracy) < 0) and accuracy[0] < 0.97
  # A turn of a, on a round cluster: a fraction a / pi of the turning half is misread.
  np.testing.assert_allclose(accuracy, 1 - 0.5 * 0.3 * np.arange(1, 5) / np.pi, atol=0.03)
  summary = groups_lib.summary(report, categories)
  assert summary["mean_group/accuracy"] == pytest.approx(accuracy.mean())
  assert summary["groups_absent"] == 6 and "9/accuracy" in summary and "0/accuracy" not in summary


def _write_periods(root, data: dict, names, folders=False):
  os.makedirs(root, exist_ok=True)
  for name, period in zip(names, sorted(data)):
    if folders:
      os.makedirs(os.path.join(root, name))
      half = len(data[period]["label"]) // 2
      for shard, rows in (("a", slice(None, half)), ("b", slice(half, None))):
        np.savez(os.path.join(root, name, f"{shard}.npz"),
                 **{k: v[rows] for k, v in data[period].items()})
    else:
      np.savez(os.path.join(root, f"{name}.npz"), **data[period])


def test_periods_reader_reads_one_file_per_period_in_time_order(tmp_path):
  generated = load("drifting_mixture", periods=11, train_periods=7, examples_per_period=20)
  data = {**by_period(generated.train), **by_period(generated.test)}
  for part in data.values():
    part.pop("period")
  names = [str(p) for p in range(11)]  # "10" sorts before "2" as text, after it in time
  _write_periods(tmp_path, data, names)
  (tmp_path / "README.md").write_text("ignored")
  dataset = load(f"periods:{tmp_path}", train_periods=7)
  assert dataset.fields["period"].categories == tuple(names)
  assert dataset.task == generated.task
  for key in generated.fields:
    np.testing.assert_array_equal(dataset.train.arrays[key], generated.train.arrays[key])
    np.testing.assert_array_equal(dataset.test.arrays[key], generated.test.arrays[key])
  with pytest.raises(ConfigError, match="read data has no known drift rates"):
    periods.drift_rates({"dir": str(tmp_path)})


def test_periods_reader_reads_period_folders_of_uint8_images(tmp_path):
  rng = np.random.default_rng(0)
  data = {p: {"image": rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
              "label": rng.integers(0, 3, 6)} for p in range(3)}
  _write_periods(tmp_path, data, ["2011", "2012", "2014"], folders=True)
  dataset = load("periods", dir=str(tmp_path), train_periods=2, num_classes=5)
  assert dataset.task.groups == ("period",) and dataset.task.num_classes == 5
  assert dataset.fields["image"].shape == (4, 4, 3)
  assert dataset.fields["period"].categories == ("2011", "2012", "2014")
  np.testing.assert_array_equal(dataset.train.arrays["period"], [0] * 6 + [1] * 6)
  np.testing.assert_allclose(dataset.test.arrays["image"], data[2]["image"] / 255, atol=1e-7)
  np.testing.assert_array_equal(dataset.test.arrays["label"], data[2]["label"])


def _bad_layout(root, case):
  good = {"features": np.zeros((4, 2), np.float32), "label": np.zeros(4, np.int64)}
  os.makedirs(root)
  write = lambda name, **arrays: np.savez(os.path.join(root, name), **arrays)
  if case in ("no label", "shapes", "no timestamp", "mixed", "twice", "ragged"):
    write("0.npz", **good)
    write("1.npz", **good)
  if case == "no label":
    write("2.npz", features=good["features"])
  elif case == "shapes":
    write("2.npz", features=np.zeros((4, 3), np.float32), label=good["label"])
  elif case == "no timestamp":
    write("latest.npz", **good)
  elif case == "mixed":
    os.makedirs(os.path.join(root, "2"))
  elif case == "twice":
    write("01.npz", **good)
  elif case == "ragged":
    write("2.npz", features=good["features"], label=np.zeros(3, np.int64))
  elif case == "not npz":
    with open(os.path.join(root, "0.npz"), "w") as file:
      file.write("not an archive")
    write("1.npz", **good)


@pytest.mark.parametrize("case, message", [
    ("empty", "holds no <period>.npz files or <period>/ folders"),
    ("no label", r"2.npz must hold `label` and one of `features` or `image`"),
    ("shapes", r"2.npz holds arrays .* but .*0.npz holds"),
    ("no timestamp", r"latest.npz has no timestamp: its name 'latest' must be an integer"),
    ("mixed", "mixes period files"),
    ("twice", "has periods '01' and '1', the same time twice|'1' and '01'"),
    ("ragged", r"2.npz arrays hold different numbers of examples"),
    ("not npz", r"0.npz cannot be read as a .npz archive"),
])
def test_periods_reader_bad_input_is_one_error_naming_the_file(tmp_path, case, message):
  root = str(tmp_path / "data")
  _bad_layout(root, case)
  with pytest.raises(ConfigError, match=message):
    load("periods", dir=root, train_periods=1)


@pytest.mark.parametrize("fields, message", [
    ({"dir": "/nonexistent/periods"}, "must be a folder of <period>.npz files"),
    ({"train_periods": None}, "data.train_periods must be set"),
    ({"train_periods": 2}, "test periods must come after training periods"),
    ({"train_periods": 0}, "data.train_periods=0 must be an integer >= 1"),
])
def test_periods_reader_bad_settings(tmp_path, fields, message):
  _write_periods(tmp_path, {p: {"features": np.zeros((3, 2)), "label": np.zeros(3, np.int64)}
                            for p in range(2)}, ["0", "1"])
  with pytest.raises(ConfigError, match=message):
    load("periods", **{"dir": str(tmp_path), "train_periods": 1, **fields})


@pytest.mark.parametrize("source", sorted(INPUT))
@pytest.mark.parametrize("key, value, message", [
    ("train_periods", 15, "data.train_periods=15 >= 15 periods: test periods must come after "
     "training periods"),
    ("train_periods", 0, "data.train_periods=0 must be an integer >= 1"),
    ("periods", 1, "data.periods=1 must be an integer >= 2"),
    ("rates", (0.1, -0.2), r"data.rates=\(0.1, -0.2\) must all be finite and >= 0"),
    ("rates", (), "data.rates=.* must be a non-empty list of numbers"),
    ("rates", ("fast",), "data.rates=.* must be a non-empty list of numbers"),
    ("examples_per_period", 0, "data.examples_per_period=0 must be an integer >= 1"),
    ("seed", -1, "data.seed=-1 must be an integer >= 0"),
    ("eval_split", "val", "data.eval_split='val': choose test or validation"),
])
def test_bad_settings_raise_one_clear_error(source, key, value, message):
  with pytest.raises(ConfigError, match=f"{source}: {message}"):
    load(source, **{key: value})


@pytest.mark.parametrize("source, key, value, message", [
    ("drifting_digits", "transform", "recolour", "data.transform='recolour': choose rotate or"),
    ("drifting_digits", "rates", tuple(range(11)), "has 11 clusters; at most 10"),
    ("drifting_mixture", "dim", 1, "data.dim=1 must be an integer >= 2"),
    ("drifting_mixture", "spread", 0.0, "data.spread=0.0 must be a number > 0"),
])
def test_bad_source_settings_raise_one_clear_error(source, key, value, message):
  with pytest.raises(ConfigError, match=message):
    load(source, **{key: value})
