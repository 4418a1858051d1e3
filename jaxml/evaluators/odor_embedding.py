"""What the odour embedding (a graph network's penultimate layer, [N, D] per molecule) holds:
whether descriptor families cluster in it, a 2-D map of it, and whether it transfers to
descriptors the network never saw from few labelled molecules (Sanchez-Lengeling et al.,
"Machine Learning for Scent", 2019). Pure host functions over arrays, so they are tested
without the network; a study feeds them the network's `features`.

  FAMILIES            a few descriptor families, each a tuple of the shipped data's names.
  family_labels       [N, F] 0/1: a molecule is in a family if it has any of its descriptors.
  project_2d          PCA to two dimensions (NumPy SVD). UMAP and t-SNE are not dependencies:
                      PCA is deterministic, linear (distances on the map mean the same thing
                      everywhere), and needs no tuning to be reproduced.
  plot_map            the post's figure: every molecule grey, each family coloured, with the
                      kernel-density contours holding 50% and 80% of its molecules.
  family_separation   per family, the AUROC with which the share of a molecule's k nearest
                      neighbours in the family tells members from non-members, beside the
                      same AUROC after shuffling membership (the control): "families cluster"
                      is the gap between the two, not the AUROC alone.
  held_out_descriptors, few_label_transfer, summarise_transfer
                      the transfer experiment: hold out descriptors, train the network on the
                      rest, then fit logistic probes on 10-100 labelled molecules per held-out
                      descriptor, on the embedding and on fingerprints, scored by AUROC on test
                      molecules. Both representations see the very same labelled molecules.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from jaxml.errors import ConfigError
from jaxml.evaluators import ranking

# Chosen by reading the 138 names of the shipped data (odor.read_table().descriptors); the
# families overlap as perfumers' words do (a molecule may be floral and citrus). Fruity is left
# out: 1,902 of the 4,983 molecules carry it, so it is no family but a third of the map.
FAMILIES: dict[str, tuple[str, ...]] = {
    "floral": ("floral", "rose", "jasmin", "violet", "lily", "muguet", "hyacinth",
               "orangeflower", "geranium", "lavender", "chamomile", "orris", "hawthorn"),
    "meaty": ("meaty", "beefy", "savory"),
    "ethereal": ("ethereal", "alcoholic", "solvent", "brandy", "cognac", "rummy"),
    "citrus": ("citrus", "lemon", "orange", "grapefruit", "bergamot"),
    "woody": ("woody", "cedar", "sandalwood", "vetiver"),
    "sulfurous": ("sulfurous", "alliaceous", "garlic", "onion", "cabbage"),
}
TRANSFORMS = ("standardize", "log1p", "none")


def _matrix(values, name: str, rows: int | None = None) -> np.ndarray:
  """`values` as a finite float64 [N, D] array (N == rows if given), or a ConfigError."""
  values = np.asarray(values)
  if values.ndim != 2 or (rows is not None and values.shape[0] != rows):
    want = f"[{rows}, D]" if rows is not None else "[N, D]"
    raise ConfigError(f"{name} must be {want}, got shape {values.shape}")
  if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
    raise ConfigError(f"{name} must be numbers, got dtype {values.dtype}")
  values = values.astype(np.float64)
  if not np.all(np.isfinite(values)):
    raise ConfigError(f"{name} holds {int(np.sum(~np.isfinite(values)))} NaN or infinite values")
  return values


def _binary(values, name: str, rows: int | None = None) -> np.ndarray:
  values = _matrix(values, name, rows)
  if not np.all((values == 0) | (values == 1)):
    raise ConfigError(f"{name} must be 0/1, got values such as "
                      f"{np.unique(values[(values != 0) & (values != 1)])[:5].tolist()}")
  return values.astype(np.int32)


def family_labels(labels, descriptors: Sequence[str],
                  families: Mapping[str, Sequence[str]] = FAMILIES) -> np.ndarray:
  """int32 [N, F]: 1 where the molecule has any of the family's descriptors, for labels [N, L]
  named by `descriptors` and the families in `families`' order."""
  labels = _binary(labels, "family_labels: labels")
  descriptors = list(descriptors)
  if len(descriptors) != labels.shape[1]:
    raise ConfigError(f"family_labels: {len(descriptors)} descriptor names for "
                      f"{labels.shape[1]} label columns")
  columns = []
  for family, names in families.items():
    missing = [n for n in names if n not in descriptors]
    if missing or not names:
      raise ConfigError(f"family_labels: family {family!r} names descriptors the labels do "
                        f"not have: {missing or 'none at all'}")
    columns.append(labels[:, [descriptors.index(n) for n in names]].max(axis=1))
  return np.stack(columns, axis=1).astype(np.int32)


def project_2d(embeddings, method: str = "pca") -> np.ndarray:
  """[N, 2]: the embeddings [N, D] centred and projected on their two principal axes.

  An axis' sign is arbitrary (LAPACK may return either), so each is pinned: the largest
  loading of each axis in absolute value is positive (scikit-learn's convention since 1.5), and
  the same embeddings always give the same map.
  """
  if method != "pca":
    raise ConfigError(f"project_2d: method={method!r}: only 'pca' (UMAP and t-SNE are not "
                      "dependencies of jaxml)")
  x = _matrix(embeddings, "project_2d: embeddings")
  if x.shape[0] < 2 or x.shape[1] < 2:
    raise ConfigError(f"project_2d: needs >= 2 molecules and >= 2 dimensions, got {x.shape}")
  x = x - x.mean(axis=0)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  axes = vt[:2]
  largest = np.argmax(np.abs(axes), axis=1)
  axes = axes * np.sign(axes[np.arange(2), largest])[:, None]
  return x @ axes.T


def _density_levels(kde, points: np.ndarray, shares: Sequence[float]) -> list[float]:
  """Densities above which `shares` of the points lie: the contours enclosing those shares
  of the family (highest-density regions, estimated at the points themselves)."""
  density = kde(points.T)
  return sorted({float(np.quantile(density, 1 - share)) for share in shares})


def plot_map(coords, family, family_names: Sequence[str], path: str, *, title: str = "",
             shares: Sequence[float] = (0.5, 0.8)) -> str:
  """The map as a PNG at `path` (returned): coords [N, 2] of every molecule in light grey; the
  members of each family (family [N, F], 0/1) coloured, with the Gaussian-KDE contours that
  enclose `shares` of its members (Scott's bandwidth). A family with fewer than 3 members, or
  all on one line, gets its points but no contour: its density is not defined."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel  # slow imports
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  from scipy.stats import gaussian_kde  # pylint: disable=import-outside-toplevel

  from jaxml.core.plots import save_figure  # pylint: disable=import-outside-toplevel
  coords = _matrix(coords, "plot_map: coords")
  if coords.shape[1] != 2:
    raise ConfigError(f"plot_map: coords must be [N, 2], got {coords.shape}")
  family = _binary(family, "plot_map: family", coords.shape[0])
  if len(family_names) != family.shape[1]:
    raise ConfigError(f"plot_map: {len(family_names)} family names for {family.shape[1]} "
                      "family columns")
  fig = Figure(figsize=(6.5, 5.5))
  ax = fig.subplots()
  ax.scatter(*coords.T, s=3, color="0.85", linewidths=0, label=f"all ({len(coords)})")
  low, high = coords.min(axis=0), coords.max(axis=0)
  pad = 0.05 * np.maximum(high - low, 1e-9)
  gx, gy = np.meshgrid(*(np.linspace(lo - p, hi + p, 120) for lo, hi, p in zip(low, high, pad)))
  colours = colormaps["tab10"]
  for f, name in enumerate(family_names):
    members = coords[family[:, f] == 1]
    colour = colours(f % colours.N)
    ax.scatter(*members.T, s=4, color=colour, alpha=0.6, linewidths=0,
               label=f"{name} ({len(members)})")
    if len(members) < 3 or np.linalg.matrix_rank(members - members.mean(axis=0)) < 2:
      continue
    kde = gaussian_kde(members.T)
    density = kde(np.stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    levels = _density_levels(kde, members, shares)
    top = max(float(density.max()), levels[-1]) * 1.01
    ax.contourf(gx, gy, density, levels=[levels[-1], top], colors=[colour], alpha=0.15)
    ax.contour(gx, gy, density, levels=levels, colors=[colour], linewidths=1.0)
  ax.set_aspect("equal", adjustable="datalim")  # a PCA map's distances mean the same both ways
  ax.set_xlabel("principal axis 1")
  ax.set_ylabel("principal axis 2")
  ax.set_title(title or "odour embedding, descriptor families", fontsize=10)
  ax.legend(fontsize=7, markerscale=3, loc="best")
  fig.tight_layout()
  return save_figure(fig, path)


def _neighbours(points: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
  """int [N, k]: each row's k nearest other rows (Euclidean), in row blocks so that N x N
  distances never sit in memory at once."""
  squared = np.sum(points ** 2, axis=1)
  out = np.empty((len(points), k), np.int64)
  for start in range(0, len(points), chunk):
    block = points[start:start + chunk]
    distance = squared[start:start + chunk, None] + squared[None] - 2 * block @ points.T
    distance[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
    out[start:start + chunk] = np.argpartition(distance, k - 1, axis=1)[:, :k]
  return out


def family_separation(points, family, family_names: Sequence[str] = (), *, k: int = 15,
                      permutations: int = 20, seed: int = 0) -> dict[str, dict[str, float]]:
  """Whether each family clusters in `points` [N, D] (the embedding, or its 2-D map).

  Each molecule's score is the share of its k nearest other molecules in the family: a
  neighbourhood statistic, so a family spread over several islands still counts as clustered,
  and leave-one-out by construction (a molecule's own label never scores it). Per family
  (family [N, F] 0/1, named by `family_names`, else "0", "1", ...) the result holds
  `auroc` (ranking.auroc of that score for membership), `control_auroc` and `control_sd`
  (mean and sd over `permutations` shufflings of the molecules' membership rows, which keep
  every family's size and overlaps: ~0.5), `p_value` ((1 + shufflings scoring >= auroc) /
  (1 + permutations)) and `members`. The neighbours are found once; shuffling only relabels.
  """
  points = _matrix(points, "family_separation: points")
  family = _binary(family, "family_separation: family", points.shape[0])
  names = [str(n) for n in family_names] or [str(f) for f in range(family.shape[1])]
  if len(names) != family.shape[1]:
    raise ConfigError(f"family_separation: {len(names)} family names for {family.shape[1]} "
                      "family columns")
  if not 1 <= k < len(points):
    raise ConfigError(f"family_separation: k={k} must be in [1, {len(points) - 1}] for "
                      f"{len(points)} molecules")
  if permutations < 1:
    raise ConfigError(f"family_separation: permutations={permutations} must be >= 1")
  neighbours = _neighbours(points, int(k))

  def aurocs(membership: np.ndarray) -> np.ndarray:
    share = membership[neighbours].mean(axis=1)  # [N, F]
    return np.array([ranking.auroc(share[:, f], membership[:, f])
                     for f in range(membership.shape[1])])

  observed = aurocs(family)
  rng = np.random.default_rng(seed)
  control = np.stack([aurocs(family[rng.permutation(len(family))])
                      for _ in range(permutations)])
  return {name: {"auroc": float(observed[f]), "control_auroc": float(control[:, f].mean()),
                 "control_sd": float(control[:, f].std(ddof=1)) if permutations > 1 else 0.0,
                 "p_value": float((1 + np.sum(control[:, f] >= observed[f]))
                                  / (1 + permutations)),
                 "members": float(family[:, f].sum())}
          for f, name in enumerate(names)}


def held_out_descriptors(labels, descriptors: Sequence[str], count: int = 10, *, seed: int = 0,
                         min_positives: int = 50) -> tuple[str, ...]:
  """`count` descriptors to hold out of the network's training, in `descriptors`' order: a
  seeded uniform draw among those with >= `min_positives` positives and as many negatives in
  `labels` [N, L] (pass the whole table). Uniform, not the most frequent, so the held-out set is
  as hard as a typical descriptor; the floor, 50 (112 of the shipped data's 138 descriptors
  qualify), leaves ~10 positives in a fifth of the molecules held out for testing."""
  labels = _binary(labels, "held_out_descriptors: labels")
  if len(descriptors) != labels.shape[1]:
    raise ConfigError(f"held_out_descriptors: {len(descriptors)} names for {labels.shape[1]} "
                      "label columns")
  positives = labels.sum(axis=0)
  eligible = np.flatnonzero((positives >= min_positives)
                            & (len(labels) - positives >= min_positives))
  if not 1 <= count <= len(eligible):
    raise ConfigError(f"held_out_descriptors: count={count}, but {len(eligible)} descriptors "
                      f"have >= min_positives={min_positives} positives and negatives")
  chosen = np.sort(np.random.default_rng(seed).choice(eligible, size=count, replace=False))
  return tuple(str(descriptors[i]) for i in chosen)


def transfer_sample(label, size: int, *, seed: int, descriptor: str, repeat: int,
                    positive_share: float | None = None) -> np.ndarray:
  """Sorted rows of the `size` labelled training molecules for one (descriptor, size, repeat).

  A function of (seed, descriptor name, size, repeat) and the labels only, never of the
  features, so the embedding and the fingerprints are fitted on the same molecules (a paired
  comparison), and a descriptor's samples do not change when others are added or removed.
  Stratified: round(size * share) positives, but at least 1 and at most size - 1, so every
  sample has both classes; the rest negatives, each class drawn uniformly without replacement.
  The share is the descriptor's prevalence in `label` (labelling random molecules; under 5%
  prevalence that is a single positive up to size 30), or `positive_share` (0.5: balanced).
  A descriptor with fewer positives (or negatives) in the pool than that gets all of them, and
  the sample is filled up from the other class. A pool with one class only, or fewer than
  `size` molecules, is a ConfigError naming the descriptor.
  """
  label = np.asarray(label).astype(np.int64)
  positive, negative = np.flatnonzero(label == 1), np.flatnonzero(label == 0)
  if size < 2 or len(label) < size or not len(positive) or not len(negative):
    raise ConfigError(f"few-label transfer: descriptor {descriptor!r} cannot give a sample of "
                      f"{size} with both classes from {len(positive)} positive and "
                      f"{len(negative)} negative training molecules")
  if positive_share is not None and not 0 < positive_share < 1:
    raise ConfigError(f"few-label transfer: positive_share={positive_share} must be in (0, 1)")
  share = len(positive) / len(label) if positive_share is None else positive_share
  wanted = int(np.clip(round(size * share), 1, size - 1))
  take_positive = min(len(positive), max(wanted, size - len(negative)))
  rng = np.random.default_rng([int(seed), zlib.crc32(descriptor.encode()), int(size),
                               int(repeat)])
  rows = np.concatenate([rng.choice(positive, take_positive, replace=False),
                         rng.choice(negative, size - take_positive, replace=False)])
  return np.sort(rows)


def transformed(features_train: np.ndarray, features_test: np.ndarray, transform: str):
  """(train, test) features as the probe sees them. `standardize` (for embeddings): centred
  and scaled by the mean and sd of *all* training molecules (features are unlabelled, so no
  label leaks; a sample of 10 would set a noisy scale), constant features left at 0.
  `log1p` (for count fingerprints): log(1 + count), damping a frequent substructure's weight,
  as the fingerprint baselines do. `none`: as given."""
  if transform == "standardize":
    mean, sd = features_train.mean(axis=0), features_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (features_train - mean) / sd, (features_test - mean) / sd
  if transform == "log1p":
    if min(features_train.min(), features_test.min()) < 0:
      raise ConfigError("few-label transfer: transform='log1p' needs non-negative counts")
    return np.log1p(features_train), np.log1p(features_test)
  if transform == "none":
    return features_train, features_test
  raise ConfigError(f"few-label transfer: transform={transform!r}: choose one of "
                    f"{', '.join(TRANSFORMS)}")


def few_label_transfer(features_train, labels_train, features_test, labels_test, *,
                       sizes: Sequence[int] = (10, 30, 100), repeats: int = 5, seed: int = 0,
                       l2: float = 0.1, transform: str = "standardize",
                       positive_share: float | None = None, descriptors: Sequence[str] = (),
                       representation: str = "features") -> list[dict]:
  """One row {representation, size, repeat, descriptor, positives, auroc} per held-out
  descriptor (a column of labels_train [N, K] / labels_test [M, K], named by `descriptors`,
  else "0", "1", ...), size n and repeat: a logistic probe fitted on the n molecules of
  `transfer_sample` (`positives` of them positive; `positive_share` is passed on to it), scored
  by ranking.auroc of its logit on all test molecules (NaN where the test labels hold one
  class).

  The probe: scikit-learn's LogisticRegression (lbfgs) minimising the class-balanced mean
  log-loss + (l2 / 2) ||w||^2 (C = 1 / (l2 n), the linear probe's parametrisation), on the
  features after `transform` (see `transformed`: "standardize" for the embedding, "log1p" for
  fingerprint counts). One fixed l2 for every size and representation: 10 labels leave
  nothing to tune it on. Balanced class weights, so a lone positive is not drowned out.
  The fits run with one BLAS thread: on problems this small, threads only contend (10x slower
  on a loaded 2-core machine).
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
  x_train = _matrix(features_train, "few_label_transfer: features_train")
  y_train = _binary(labels_train, "few_label_transfer: labels_train", x_train.shape[0])
  x_test = _matrix(features_test, "few_label_transfer: features_test")
  y_test = _binary(labels_test, "few_label_transfer: labels_test", x_test.shape[0])
  if x_test.shape[1] != x_train.shape[1] or y_test.shape[1] != y_train.shape[1]:
    raise ConfigError(f"few_label_transfer: train features/labels {x_train.shape}/"
                      f"{y_train.shape} and test {x_test.shape}/{y_test.shape} disagree")
  names = [str(n) for n in descriptors] or [str(j) for j in range(y_train.shape[1])]
  if len(names) != y_train.shape[1]:
    raise ConfigError(f"few_label_transfer: {len(names)} descriptor names for "
                      f"{y_train.shape[1]} label columns")
  if not sizes or repeats < 1 or not l2 > 0:
    raise ConfigError(f"few_label_transfer: needs sizes (got {tuple(sizes)}), repeats >= 1 "
                      f"(got {repeats}) and l2 > 0 (got {l2})")
  x_train, x_test = transformed(x_train, x_test, transform)
  rows = []
  with threadpool_limits(limits=1, user_api="blas"):
    for j, name in enumerate(names):
      for size, repeat in ((int(n), r) for n in sizes for r in range(repeats)):
        sample = transfer_sample(y_train[:, j], size, seed=seed, descriptor=name,
                                 repeat=repeat, positive_share=positive_share)
        model = LogisticRegression(C=1.0 / (l2 * len(sample)), class_weight="balanced",
                                   max_iter=2000, tol=1e-6)
        model.fit(x_train[sample], y_train[sample, j])
        rows.append({"representation": representation, "size": size, "repeat": repeat,
                     "descriptor": name, "positives": int(y_train[sample, j].sum()),
                     "auroc": ranking.auroc(model.decision_function(x_test), y_test[:, j])})
  return rows


def summarise_transfer(rows: Sequence[dict], baseline: str = "") -> list[dict]:
  """Per (size, representation), in first-seen order: `mean_auroc` and `sd_auroc` over its
  scored (descriptor, repeat) rows (NaN rows skipped, their number `scored`). With `baseline`
  (a representation's name), also `paired_difference` and `paired_sd`: the mean and sd of
  auroc minus the baseline's on the same (descriptor, repeat), i.e. on the same molecules,
  which removes the descriptors' differing difficulty from the comparison."""
  groups: dict[tuple[int, str], dict[tuple[str, int], float]] = {}
  for row in rows:
    groups.setdefault((row["size"], row["representation"]), {})[
        (row["descriptor"], row["repeat"])] = row["auroc"]
  table = []
  for (size, representation), scores in groups.items():
    values = np.array([v for v in scores.values() if np.isfinite(v)])
    entry = {"size": size, "representation": representation,
             "mean_auroc": float(values.mean()) if len(values) else float("nan"),
             "sd_auroc": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
             "scored": len(values)}
    if baseline:
      if (size, baseline) not in groups:
        raise ConfigError(f"summarise_transfer: baseline {baseline!r} has no rows at size {size}")
      reference = groups[(size, baseline)]
      diffs = np.array([v - reference[key] for key, v in scores.items()
                        if key in reference and np.isfinite(v - reference[key])])
      entry["paired_difference"] = float(diffs.mean()) if len(diffs) else float("nan")
      entry["paired_sd"] = float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan")
    table.append(entry)
  return table
