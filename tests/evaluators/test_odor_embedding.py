"""The odour-embedding analysis against independent references: families on a hand-made table
and on the shipped descriptor names; PCA against scikit-learn's; the map's PNG; the
neighbourhood separation against a brute-force k-NN + roc_auc_score and its shuffled control;
few-label transfer's samples (stratified, deterministic, shared by both representations) and
one AUROC against scikit-learn fitted directly; the summary against hand-computed means."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import decomposition, linear_model, metrics, neighbors, preprocessing

from jaxml.data.sources import odor
from jaxml.errors import ConfigError
from jaxml.evaluators import odor_embedding as oe


def test_every_family_names_shipped_descriptors_and_has_members():
  table = odor.read_table()
  for family, names in oe.FAMILIES.items():
    assert set(names) <= set(table.descriptors), family
  members = oe.family_labels(table.labels, table.descriptors)
  # Each column is the OR of its descriptors' columns, counted here row by row.
  for f, names in enumerate(oe.FAMILIES.values()):
    columns = [table.descriptors.index(n) for n in names]
    expected = sum(1 for row in table.labels if any(row[c] for c in columns))
    assert members[:, f].sum() == expected > 300


def test_family_labels_on_a_hand_made_table():
  labels = np.array([[1, 0, 0, 0],
                     [0, 0, 1, 0],
                     [0, 1, 0, 1],
                     [0, 1, 0, 0]])
  families = {"x": ("a", "c"), "y": ("d",), "z": ("b", "d")}
  got = oe.family_labels(labels, ("a", "b", "c", "d"), families)
  np.testing.assert_array_equal(got, [[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]])
  assert got.dtype == np.int32
  with pytest.raises(ConfigError, match="'x'.*'e'"):
    oe.family_labels(labels, ("a", "b", "c", "d"), {"x": ("a", "e")})
  with pytest.raises(ConfigError, match="3 descriptor names for 4"):
    oe.family_labels(labels, ("a", "b", "c"), families)


def test_pca_equals_sklearn_with_the_pinned_sign():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5)) + 3.0
  coords = oe.project_2d(x)
  # scikit-learn >= 1.5 pins the same sign: each axis' largest loading positive.
  np.testing.assert_allclose(coords, decomposition.PCA(2, svd_solver="full").fit_transform(x),
                             atol=1e-10)
  loadings = np.linalg.lstsq(x - x.mean(axis=0), coords, rcond=None)[0]  # [5, 2]
  assert np.all(loadings[np.argmax(np.abs(loadings), axis=0), [0, 1]] > 0)
  # A copy with the features reversed is the same data: the same map, not a flipped one.
  np.testing.assert_allclose(oe.project_2d(x[:, ::-1]), coords, atol=1e-10)
  with pytest.raises(ConfigError, match="UMAP"):
    oe.project_2d(x, method="umap")


def test_map_png_is_written(tmp_path):
  rng = np.random.default_rng(1)
  coords = rng.normal(size=(200, 2))
  family = (rng.random((200, 3)) < 0.2).astype(int)
  family[:, 2] = 0
  family[:2, 2] = 1  # two members: points, no density
  path = oe.plot_map(coords, family, ["floral", "meaty", "rare"], str(tmp_path / "map.png"))
  assert path == str(tmp_path / "map.png")
  assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ConfigError, match="2 family names for 3"):
    oe.plot_map(coords, family, ["a", "b"], str(tmp_path / "x.png"))


def clustered(seed=0, n=240, dim=6):
  """Points in `dim` dimensions; family 0 and 1 gathered around their own centres, family 2
  members drawn at random (no cluster)."""
  rng = np.random.default_rng(seed)
  points = rng.normal(scale=3.0, size=(n, dim))
  family = np.zeros((n, 3), int)
  family[:40, 0], family[40:80, 1] = 1, 1
  points[:40] = rng.normal(size=(40, dim)) * 0.5 + 4.0
  points[40:80] = rng.normal(size=(40, dim)) * 0.5 - 4.0
  family[rng.choice(n, 40, replace=False), 2] = 1
  return points, family


def test_family_separation_equals_brute_force_and_beats_its_control():
  points, family = clustered()
  result = oe.family_separation(points, family, ["a", "b", "random"], k=10, permutations=20)
  # Reference: scikit-learn's exact k-NN (the query itself excluded) and roc_auc_score.
  _, index = neighbors.NearestNeighbors(n_neighbors=11).fit(points).kneighbors(points)
  for f, name in enumerate(["a", "b", "random"]):
    share = family[index[:, 1:], f].mean(axis=1)
    assert result[name]["auroc"] == pytest.approx(metrics.roc_auc_score(family[:, f], share),
                                                  abs=1e-12)
    assert result[name]["members"] == 40
  for name in ("a", "b"):
    assert result[name]["auroc"] - result[name]["control_auroc"] > 0.3
    assert result[name]["p_value"] == pytest.approx(1 / 21)
  assert abs(result["random"]["auroc"] - result["random"]["control_auroc"]) < 0.1
  assert abs(result["a"]["control_auroc"] - 0.5) < 0.1
  again = oe.family_separation(points, family, ["a", "b", "random"], k=10, permutations=20)
  assert again == result  # seeded shufflings
  with pytest.raises(ConfigError, match="k=240"):
    oe.family_separation(points, family, k=240)


def test_held_out_descriptors_draws_among_those_with_enough_positives():
  rng = np.random.default_rng(2)
  prevalence = np.array([0.01, 0.3, 0.02, 0.4, 0.5, 0.99, 0.2, 0.25])
  labels = (rng.random((1000, 8)) < prevalence).astype(int)
  names = [f"d{i}" for i in range(8)]
  eligible = [n for n, p in zip(names, labels.sum(0)) if 50 <= p <= 950]
  assert eligible == ["d1", "d3", "d4", "d6", "d7"]
  # Asked for all of them: exactly the eligible ones, in the table's order.
  assert oe.held_out_descriptors(labels, names, 5, min_positives=50) == tuple(eligible)
  chosen = oe.held_out_descriptors(labels, names, 3, seed=4, min_positives=50)
  assert len(chosen) == 3 and set(chosen) <= set(eligible)
  assert list(chosen) == sorted(chosen, key=names.index)
  assert oe.held_out_descriptors(labels, names, 3, seed=4, min_positives=50) == chosen
  with pytest.raises(ConfigError, match="count=6, but 5 descriptors"):
    oe.held_out_descriptors(labels, names, 6, min_positives=50)


def test_transfer_samples_are_stratified_deterministic_and_keyed_by_descriptor():
  label = np.zeros(500, int)
  label[::10] = 1  # prevalence 0.1
  for size, positives in ((10, 1), (30, 3), (100, 10)):
    rows = oe.transfer_sample(label, size, seed=0, descriptor="rose", repeat=1)
    assert len(set(rows)) == size and label[rows].sum() == positives
    np.testing.assert_array_equal(
        oe.transfer_sample(label, size, seed=0, descriptor="rose", repeat=1), rows)
  base = oe.transfer_sample(label, 30, seed=0, descriptor="rose", repeat=0)
  for other in ({"seed": 1, "descriptor": "rose", "repeat": 0},
                {"seed": 0, "descriptor": "musk", "repeat": 0},
                {"seed": 0, "descriptor": "rose", "repeat": 1}):
    assert not np.array_equal(oe.transfer_sample(label, 30, **other), base)
  balanced = oe.transfer_sample(label, 30, seed=0, descriptor="rose", repeat=0,
                                positive_share=0.5)
  assert label[balanced].sum() == 15
  # Too few of one class: all of it, the rest from the other class.
  rare = np.zeros(50, int)
  rare[7] = 1
  rows = oe.transfer_sample(rare, 10, seed=0, descriptor="x", repeat=0)
  assert 7 in rows and len(rows) == 10
  mostly = np.ones(12, int)
  mostly[[3, 5]] = 0
  rows = oe.transfer_sample(mostly, 10, seed=0, descriptor="x", repeat=0, positive_share=0.5)
  assert {3, 5} <= set(rows) and mostly[rows].sum() == 8
  with pytest.raises(ConfigError, match="'x'.*0 positive"):
    oe.transfer_sample(np.zeros(50, int), 10, seed=0, descriptor="x", repeat=0)


def synthetic_transfer(seed=0):
  """Three descriptors thresholding a latent [N, 3]; representation A sees the latent (with
  noise dimensions), B is noise; C are non-negative counts that see it."""
  rng = np.random.default_rng(seed)
  latent = rng.normal(size=(700, 3))
  labels = (latent > 1.0).astype(int)  # prevalence ~0.16
  a = np.concatenate([latent + 0.3 * rng.normal(size=latent.shape),
                      rng.normal(size=(700, 5))], axis=1) * 7.0 + 2.0
  b = rng.normal(size=(700, 8))
  c = rng.poisson(np.exp(np.concatenate([latent, np.zeros((700, 2))], axis=1)))
  return labels, a, b, c.astype(float)


def direct_auroc(train_x, test_x, labels, rows, j, l2):
  """The probe as scikit-learn is used directly: fitted on the rows, scored on the test."""
  model = linear_model.LogisticRegression(C=1 / (l2 * len(rows)), class_weight="balanced",
                                          max_iter=2000, tol=1e-6)
  model.fit(train_x[rows], labels[:400][rows, j])
  return metrics.roc_auc_score(labels[400:, j], model.decision_function(test_x))


def test_few_label_transfer_is_paired_and_informative_features_win():
  labels, a, b, c = synthetic_transfer()
  names = ("fruity", "musk", "woody")
  split = lambda x: (x[:400], labels[:400], x[400:], labels[400:])
  kwargs = {"sizes": (10, 30), "repeats": 3, "seed": 5, "l2": 0.1, "descriptors": names}
  rows_a = oe.few_label_transfer(*split(a), representation="A", **kwargs)
  rows_b = oe.few_label_transfer(*split(b), representation="B", **kwargs)
  assert len(rows_a) == len(rows_b) == 3 * 2 * 3
  for ra, rb in zip(rows_a, rows_b):
    assert (ra["descriptor"], ra["size"], ra["repeat"]) == (rb["descriptor"], rb["size"],
                                                            rb["repeat"])
    assert 1 <= ra["positives"] == rb["positives"] <= ra["size"] - 1
  # One (descriptor, size, repeat) refitted directly in scikit-learn on transfer_sample's rows,
  # for both representations: so both used those very molecules.
  row = next(r for r in rows_a if (r["descriptor"], r["size"], r["repeat"]) == ("musk", 30, 2))
  sample = oe.transfer_sample(labels[:400, 1], 30, seed=5, descriptor="musk", repeat=2)
  scaler = preprocessing.StandardScaler().fit(a[:400])
  assert row["auroc"] == pytest.approx(direct_auroc(
      scaler.transform(a[:400]), scaler.transform(a[400:]), labels, sample, 1, 0.1), abs=1e-9)
  row_b = rows_b[rows_a.index(row)]
  scaler = preprocessing.StandardScaler().fit(b[:400])
  assert row_b["auroc"] == pytest.approx(direct_auroc(
      scaler.transform(b[:400]), scaler.transform(b[400:]), labels, sample, 1, 0.1), abs=1e-9)
  # Paired differences, computed here row by row, and as the summary gives them.
  summary = oe.summarise_transfer(rows_a + rows_b, baseline="B")
  for size in (10, 30):
    diffs = [ra["auroc"] - rb["auroc"] for ra, rb in zip(rows_a, rows_b) if ra["size"] == size]
    assert np.mean(diffs) > 0.2
    entry = next(e for e in summary if (e["size"], e["representation"]) == (size, "A"))
    assert entry["paired_difference"] == pytest.approx(np.mean(diffs), abs=1e-12)
    assert entry["paired_sd"] == pytest.approx(np.std(diffs, ddof=1), abs=1e-12)
  # Counts through log1p, against scikit-learn on np.log1p directly.
  rows_c = oe.few_label_transfer(*split(c), transform="log1p", representation="C",
                                 **{**kwargs, "sizes": (10,), "repeats": 1})
  sample = oe.transfer_sample(labels[:400, 0], 10, seed=5, descriptor="fruity", repeat=0)
  assert rows_c[0]["auroc"] == pytest.approx(direct_auroc(
      np.log1p(c[:400]), np.log1p(c[400:]), labels, sample, 0, 0.1), abs=1e-9)
  with pytest.raises(ConfigError, match="transform='pca'"):
    oe.few_label_transfer(*split(a), transform="pca", **kwargs)


def test_summarise_transfer_against_hand_computed_means():
  rows = [{"representation": r, "size": 10, "repeat": k, "descriptor": d, "auroc": v}
          for r, values in (("emb", (0.9, 0.7, 0.8, float("nan"))), ("fp", (0.6, 0.6, 0.5, 0.7)))
          for (d, k), v in zip((("x", 0), ("x", 1), ("y", 0), ("y", 1)), values)]
  emb, fp = oe.summarise_transfer(rows, baseline="fp")
  assert (emb["size"], emb["representation"], emb["scored"]) == (10, "emb", 3)
  assert emb["mean_auroc"] == pytest.approx(0.8)
  assert emb["sd_auroc"] == pytest.approx(0.1)
  assert emb["paired_difference"] == pytest.approx((0.3 + 0.1 + 0.3) / 3)
  assert fp["mean_auroc"] == pytest.approx(0.6) and fp["paired_difference"] == 0.0
  assert oe.summarise_transfer(rows)[0].keys() == {"size", "representation", "mean_auroc",
                                                   "sd_auroc", "scored"}
