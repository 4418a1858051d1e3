"""The peers outside jaxml for multi-label odour prediction: fingerprint baselines in
scikit-learn, fitted on the same splits as the graph network and scored by the same
`jaxml.evaluators.ranking` (Sanchez-Lengeling et al., "Machine Learning for Scent", 2019,
compared their GNN with random forests and k-nearest neighbours on Morgan fingerprints).

Inputs are plain feature matrices, [N, D] non-negative counts (Morgan count fingerprints, e.g.
radius 2 x 2,048 bits), and 0/1 label matrices [N, L]; the output is the probability of each
label, [N_test, L]. A label with one class only in the training rows still gets a column: the
constant probability of that class (1 for all-positive, 0 for all-negative), never a crash.

  random_forest  one multi-output RandomForestClassifier: every tree splits on the Gini impurity
                 averaged over all L labels, so rare labels share the structure the frequent
                 ones find (and one forest costs what one label would, not L). Raw counts (trees
                 are indifferent to monotone rescaling). 300 trees, min_samples_leaf 3 and
                 max_features sqrt(D) by default: 1 sample per leaf makes every leaf's
                 probability 0 or 1 for a rare label, and fully grown trees store an [L, 2]
                 table per node (300 trees on the 4,000 x 2,048 stand-in below: 1.5 M nodes,
                 3.4 GB; with leaf 3: 0.23 M nodes). No class weights: scikit-learn multiplies
                 the L labels' balanced weights into one sample weight, which would weight
                 molecules by how many rare descriptors they carry.
  knn            KNeighborsClassifier, 50 neighbours weighted by inverse distance, on the
                 Tanimoto distance of count vectors, 1 - a.b / (|a|^2 + |b|^2 - a.b): the
                 chemists' fingerprint similarity, equal to Jaccard on 0/1 fingerprints, and
                 indifferent to how many bits are off in both (Euclidean distance rewards two
                 small molecules for sharing absences). Computed by matrix products and passed
                 precomputed. Distance weights give rare labels graded scores where k uniform
                 votes would tie most molecules at 0.
  logistic       one L2-penalised LogisticRegression per label (one-vs-rest), liblinear on the
                 sparse log1p counts, C = 0.3; intercept_scaling 10 because liblinear penalises
                 the intercept like a weight, which pulls a rare label's intercept (its base
                 rate) towards 0; at 10 it matched lbfgs' macro AUROC (at 1, 0.02 below) in a
                 tenth of lbfgs' time, label by label, on the stand-in.

The paper's own baseline settings are not reproduced here: the sources reachable while writing
this gave its text only up to its abstract. `tune` chooses each baseline's
setting from `GRIDS` on an inner validation split of the training rows by macro AUROC, as the
graph network's are chosen, so the comparison is between tuned models.

Measured with scikit-learn 1.9 on 2 CPU cores, one random 80/20 split (seed 0) of the 4,983
odour molecules (RDKit radius-2 count fingerprints, 2,048 bits, 23 bits set per molecule; 138
labels): fit_predict with the defaults on 3,986 training molecules; tune on the same rows
(inner 80/20 split, the whole grid); test macro AUROC / AUPRC with the defaults. A stand-in of
random sparse counts (4,000 x 2,048, 34 bits set) took 15.8 s, 3.5 s and 2.9 s to fit_predict.

  baseline        fit_predict   tune     test macro AUROC / AUPRC   tune chose
  random_forest   12.4 s        35 s     0.858 / 0.316              min_samples_leaf 3
  knn              3.8 s        10 s     0.818 / 0.278              k 100 (test 0.820)
  logistic         2.3 s         8 s     0.850 / 0.300              C 0.3
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import sparse

from jaxml.errors import ConfigError
from jaxml.evaluators import ranking

BASELINES = ("random_forest", "knn", "logistic")
DEFAULTS: dict[str, dict] = {
    "random_forest": {"n_estimators": 300, "min_samples_leaf": 3, "max_features": "sqrt"},
    "knn": {"n_neighbors": 50, "weights": "distance"},
    "logistic": {"C": 0.3},
}
# The settings `tune` tries: every combination of the listed values, the rest at DEFAULTS.
GRIDS: dict[str, dict[str, tuple]] = {
    "random_forest": {"min_samples_leaf": (1, 3, 10)},
    "knn": {"n_neighbors": (10, 25, 50, 100, 200), "weights": ("uniform", "distance")},
    "logistic": {"C": (0.01, 0.03, 0.1, 0.3, 1.0)},
}


def settings_of(name: str, overrides: dict) -> dict:
  """DEFAULTS[name] updated by `overrides`; a ConfigError for an unknown baseline or key."""
  if name not in BASELINES:
    raise ConfigError(f"unknown odour baseline {name!r}: choose from {', '.join(BASELINES)}")
  unknown = sorted(set(overrides) - set(DEFAULTS[name]))
  if unknown:
    raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for the odour baseline "
                      f"{name!r}: it takes {', '.join(DEFAULTS[name])}")
  return {**DEFAULTS[name], **overrides}


def _features(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or not len(x):
    raise ConfigError(f"{what} must be a non-empty [N, D] matrix, got shape {x.shape}")
  if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
    raise ConfigError(f"{what} must be finite numbers")
  if np.any(x < 0):
    raise ConfigError(f"{what} must be non-negative counts (fingerprints), got a minimum "
                      f"{x.min()}")
  return x


def _checked(train_x, train_y, test_x):
  train_x, test_x = _features(train_x, "train_x"), _features(test_x, "test_x")
  train_y = np.asarray(train_y)
  if train_y.ndim != 2 or len(train_y) != len(train_x):
    raise ConfigError(f"train_y must be [N, L] with the N = {len(train_x)} rows of train_x, "
                      f"got shape {train_y.shape}")
  if not np.all((train_y == 0) | (train_y == 1)):
    raise ConfigError("train_y must hold 0/1 labels")
  if test_x.shape[1] != train_x.shape[1]:
    raise ConfigError(f"test_x has {test_x.shape[1]} features, train_x {train_x.shape[1]}")
  return train_x, train_y.astype(np.int8), test_x


def _positive(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
  """The probability of class 1 from one label's predict_proba: a model that saw one class
  only returns a single column, for that class."""
  column = np.flatnonzero(classes == 1)
  return proba[:, column[0]] if column.size else np.zeros(len(proba))


def _per_label(model, fit_x, train_y, predict_x) -> np.ndarray:
  """[N_test, L] positive probabilities of a multi-output scikit-learn classifier (one label
  is fitted as a 1-D target, where scikit-learn returns arrays instead of lists)."""
  if train_y.shape[1] == 1:
    model.fit(fit_x, train_y[:, 0])
    probas, classes = [model.predict_proba(predict_x)], [model.classes_]
  else:
    model.fit(fit_x, train_y)
    probas, classes = model.predict_proba(predict_x), model.classes_
  return np.stack([_positive(p, c) for p, c in zip(probas, classes)], axis=1)


def tanimoto_distance(a, b) -> np.ndarray:
  """[len(a), len(b)] 1 - a.b / (|a|^2 + |b|^2 - a.b) between non-negative count vectors (two
  empty vectors are identical: distance 0)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  dot = a @ b.T
  union = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - dot
  with np.errstate(invalid="ignore", divide="ignore"):
    similarity = np.where(union > 0, dot / union, 1.0)
  return np.clip(1.0 - similarity, 0.0, 1.0)  # rounding can leave -1e-16


def _random_forest(train_x, train_y, test_x, seed, **settings):
  # pylint: disable=import-outside-toplevel  # scikit-learn's estimators are slow to import
  from sklearn.ensemble import RandomForestClassifier
  model = RandomForestClassifier(**settings, n_jobs=-1, random_state=seed)
  return _per_label(model, train_x, train_y, test_x)


def _knn(train_x, train_y, test_x, seed, n_neighbors, weights):
  """k above the number of training rows uses them all (k-NN is deterministic: no seed)."""
  del seed
  from sklearn.neighbors import KNeighborsClassifier  # pylint: disable=import-outside-toplevel
  model = KNeighborsClassifier(n_neighbors=min(int(n_neighbors), len(train_x)),
                               weights=weights, metric="precomputed")
  return _per_label(model, tanimoto_distance(train_x, train_x), train_y,
                    tanimoto_distance(test_x, train_x))


def _logistic(train_x, train_y, test_x, seed, C):  # pylint: disable=invalid-name
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  fit_x, predict_x = (sparse.csr_matrix(np.log1p(x.astype(np.float64)))
                      for x in (train_x, test_x))
  columns = []
  for label in train_y.T:
    if label.min() == label.max():  # one class: its constant probability, nothing to fit
      columns.append(np.full(len(test_x), float(label[0])))
      continue
    model = LogisticRegression(C=C, solver="liblinear", intercept_scaling=10.0,
                               max_iter=1000, random_state=seed).fit(fit_x, label)
    columns.append(_positive(model.predict_proba(predict_x), model.classes_))
  return np.stack(columns, axis=1)


_FITTERS = {"random_forest": _random_forest, "knn": _knn, "logistic": _logistic}


def fit_predict(name: str, train_x, train_y, test_x, seed: int, **overrides) -> np.ndarray:
  """Baseline `name` (one of BASELINES) fitted on train_x [N, D] (non-negative counts) and
  train_y [N, L] (0/1), returning the probability of each label for test_x: [N_test, L].
  `overrides` replace DEFAULTS[name] (e.g. n_neighbors=10); `seed` fixes the forest's and the
  solver's randomness."""
  settings = settings_of(name, overrides)
  train_x, train_y, test_x = _checked(train_x, train_y, test_x)
  return _FITTERS[name](train_x, train_y, test_x, int(seed), **settings)


def grid_points(grid: dict[str, tuple]) -> list[dict]:
  """Every combination of a grid's values, in the order of its keys and values."""
  keys = list(grid)
  return [dict(zip(keys, values)) for values in itertools.product(*grid.values())]


def inner_split(count: int, seed: int, validation_fraction: float = 0.2):
  """(fit rows, validation rows): a random `validation_fraction` of range(count), by `seed`,
  each sorted. Random, not stratified: a label left with one class in the validation rows is
  skipped by the macro mean (`ranking.multilabel_summary`)."""
  if not 0 < validation_fraction < 1:
    raise ConfigError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
  order = np.random.default_rng(seed).permutation(count)
  held = int(round(count * validation_fraction))
  if held < 1 or held >= count:
    raise ConfigError(f"{count} training rows are too few to hold out {validation_fraction} "
                      "for validation")
  return np.sort(order[held:]), np.sort(order[:held])


def validation_scores(name: str, train_x, train_y, seed: int, grid=None,
                      validation_fraction: float = 0.2) -> list[tuple[dict, float]]:
  """(setting, validation macro AUROC) for each point of `grid` (default GRIDS[name]), each
  fitted on the fit rows of `inner_split(len(train_x), seed, validation_fraction)`."""
  grid = GRIDS[name] if grid is None and name in GRIDS else grid
  points = grid_points(grid or {})
  for point in points:
    settings_of(name, point)  # every setting checked before anything is fitted
  train_x, train_y, _ = _checked(train_x, train_y, train_x)
  fit, held = inner_split(len(train_x), seed, validation_fraction)
  out = []
  for point in points:
    scores = fit_predict(name, train_x[fit], train_y[fit], train_x[held], seed, **point)
    out.append((point, ranking.multilabel_summary(scores, train_y[held])["auroc/macro"]))
  return out


def tune(name: str, train_x, train_y, seed: int, grid=None,
         validation_fraction: float = 0.2) -> dict:
  """The setting of `grid` (default GRIDS[name]) with the best validation macro AUROC (the
  first on ties), as overrides for `fit_predict`. A ConfigError if no validation label has
  both classes (nothing to choose by)."""
  scored = [(point, value) for point, value in validation_scores(
      name, train_x, train_y, seed, grid, validation_fraction) if np.isfinite(value)]
  if not scored:
    raise ConfigError(f"cannot tune {name!r}: no label has both classes in the validation rows")
  best = max(range(len(scored)), key=lambda i: (scored[i][1], -i))
  return dict(scored[best][0])
