"""A click-log simulator with a known ground truth: hashed categorical ids in, clicks out.

Source `clicklog`. Recommendation is the setting where smooth activations were found to make
replicas disagree less (issue 18), and a simulator lets a model's log loss be set against the
Bayes-optimal one, which no logged data set can give. Deterministic in `data.seed`.

The generative model (a "world" drawn once from the seed, then independent impressions):

  users u = 0..U-1, items i = 0..I-1 with latent factors x_u, y_i ~ N(0, K^-1/2 I_K), so that
      x_u . y_i has unit variance whatever the factor dim K (`data.factors`);
  each item has a fixed category c(i) of C = 20; each impression has an hour h (uniform over
      24) and a device d (of 3, with probabilities 0.6, 0.3, 0.1);
  users and items are drawn with Zipf-like popularity (weight ~ 1/(rank + 10)), as real logs
      are dominated by a few heavy users and popular items;
  logit = x_u . y_i                                     (user-item affinity)
          + b_user[u] + b_item[i] + b_hour[h] + b_device[d] + b_category[c(i)]
          + w_cross[c(i), h]                            (a pairwise feature cross)
          + offset,
      biases ~ N(0, 0.5^2) (user, item) or N(0, 0.3^2) (context), w_cross ~ N(0, 0.5^2); the
      offset is found by bisection so that the mean clean click probability over the
      generated impressions is `data.click_rate`;
  a clean click ~ Bernoulli(sigmoid(logit)), then flipped with probability `data.label_noise`.

Fields: `ids` int32 [5], the hashed id of (user, item, hour, device, category), each field's
raw value hashed into `data.vocab` buckets, so distinct values of one field collide as real
hashed ids do (fields never share buckets: a model's embedding rows are per field);
`click` int32 (0 no click, 1 click), the recorded label, noise included; `p_click` float32,
P(click = 1 | raw features) with the noise folded in, p (1 - e) + (1 - p) e: the Bayes-optimal
predictor of `click`, so the mean log loss of `p_click` on a split is the floor a model can
reach (a model sees hashed ids, so where they collide it cannot quite reach it). Task:
2-class classification of `click` from `ids`.

Config (all optional): `seed` (0), `train_size` (50,000), `test_size` (10,000), `num_users`
(1,000), `num_items` (500), `factors` (8), `vocab` (1,000 buckets per field), `click_rate`
(0.2, of clean clicks), `label_noise` (0.0, flip probability, < 0.5).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

FIELDS = ("user", "item", "hour", "device", "category")
HOURS, DEVICES, CATEGORIES = 24, 3, 20
DEVICE_SHARE = (0.6, 0.3, 0.1)
DEFAULTS = {"seed": 0, "train_size": 50_000, "test_size": 10_000, "num_users": 1_000,
            "num_items": 500, "factors": 8, "vocab": 1_000, "click_rate": 0.2,
            "label_noise": 0.0}
# Separate random streams (seeded by (seed, stream)) so that changing the label noise or a
# split size does not change the world or the clean clicks drawn for the same impressions.
WORLD, IMPRESSIONS, CLICKS, NOISE = range(4)


@dataclasses.dataclass(frozen=True)
class World:
  """The fixed ground truth: latent factors, biases and the cross weights."""

  user_factors: np.ndarray  # [U, K]
  item_factors: np.ndarray  # [I, K]
  item_category: np.ndarray  # [I]
  biases: tuple[np.ndarray, ...]  # one per field of FIELDS, indexed by the raw value
  cross: np.ndarray  # [CATEGORIES, HOURS]
  user_weights: np.ndarray  # sampling probabilities, [U]
  item_weights: np.ndarray  # [I]


def settings(data_config) -> dict:
  """The config's values over DEFAULTS, checked; ConfigError naming the bad key."""
  values = {k: data_config.get(k, v) for k, v in DEFAULTS.items()}
  for key in ("train_size", "test_size", "num_users", "num_items", "factors", "vocab"):
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ConfigError(f"data.{key}={value!r} must be an integer >= 1")
  rate, noise = values["click_rate"], values["label_noise"]
  if not isinstance(rate, (int, float)) or not 0 < rate < 1:
    raise ConfigError(f"data.click_rate={rate!r} must be in (0, 1)")
  if not isinstance(noise, (int, float)) or not 0 <= noise < 0.5:
    # At 0.5 the label says nothing; beyond it the labels are inverted, not noisy.
    raise ConfigError(f"data.label_noise={noise!r} must be in [0, 0.5)")
  return values


def _popularity(rng: np.random.Generator, n: int) -> np.ndarray:
  weights = 1.0 / (np.arange(n) + 10.0)
  weights = rng.permutation(weights)  # popularity unrelated to the id's value
  return weights / weights.sum()


def make_world(values: dict) -> World:
  rng = np.random.default_rng([values["seed"], WORLD])
  users, items, k = values["num_users"], values["num_items"], values["factors"]
  scale = k ** -0.25  # each factor's sd: the dot product of two then has variance 1
  sizes = (users, items, HOURS, len(DEVICE_SHARE), CATEGORIES)
  sds = (0.5, 0.5, 0.3, 0.3, 0.3)
  return World(
      user_factors=rng.normal(0, scale, (users, k)),
      item_factors=rng.normal(0, scale, (items, k)),
      item_category=rng.integers(0, CATEGORIES, items),
      biases=tuple(rng.normal(0, sd, n) for n, sd in zip(sizes, sds)),
      cross=rng.normal(0, 0.5, (CATEGORIES, HOURS)),
      user_weights=_popularity(rng, users), item_weights=_popularity(rng, items))


def impressions(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
  """Raw feature values [n, len(FIELDS)] (int64): user, item, hour, device, category."""
  user = rng.choice(len(world.user_weights), n, p=world.user_weights)
  item = rng.choice(len(world.item_weights), n, p=world.item_weights)
  hour = rng.integers(0, HOURS, n)
  device = rng.choice(len(DEVICE_SHARE), n, p=DEVICE_SHARE)
  return np.stack([user, item, hour, device, world.item_category[item]], axis=1)


def logits(world: World, raw: np.ndarray) -> np.ndarray:
  """The click logit of each impression, before the offset."""
  user, item, hour, _, category = raw.T
  affinity = np.einsum("nk,nk->n", world.user_factors[user], world.item_factors[item])
  biases = sum(bias[raw[:, f]] for f, bias in enumerate(world.biases))
  return affinity + biases + world.cross[category, hour]


def sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning for large |x|


def solve_offset(logit: np.ndarray, rate: float) -> float:
  """The offset b with mean(sigmoid(logit + b)) = rate (bisection: the mean is monotone)."""
  low, high = -30.0, 30.0
  for _ in range(60):
    mid = 0.5 * (low + high)
    low, high = (mid, high) if sigmoid(logit + mid).mean() < rate else (low, mid)
  return 0.5 * (low + high)


def hash_ids(raw: np.ndarray, vocab: int) -> np.ndarray:
  """Each field's raw values hashed (splitmix64 of field and value) into [0, vocab).

  Salted by the field, so two fields' equal raw values land in unrelated buckets; not by the
  seed, as a production hash is fixed while the data changes.
  """
  field = np.arange(raw.shape[1], dtype=np.uint64)
  with np.errstate(over="ignore"):  # wrap-around multiplication is the hash
    z = raw.astype(np.uint64) + (field << np.uint64(32)) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z % np.uint64(vocab)).astype(np.int32)


def load(data_config) -> Dataset:
  values = settings(data_config)
  world = make_world(values)
  seed, sizes = values["seed"], (values["train_size"], values["test_size"])
  raw = impressions(world, sum(sizes), np.random.default_rng([seed, IMPRESSIONS]))
  logit = logits(world, raw)
  clean_p = sigmoid(logit + solve_offset(logit, float(values["click_rate"])))
  clicks = np.random.default_rng([seed, CLICKS]).random(len(raw)) < clean_p
  noise = float(values["label_noise"])
  flips = np.random.default_rng([seed, NOISE]).random(len(raw)) < noise
  arrays = {"ids": hash_ids(raw, values["vocab"]),
            "click": (clicks ^ flips).astype(np.int32),
            "p_click": (clean_p * (1 - noise) + (1 - clean_p) * noise).astype(np.float32)}
  train = ArraySplit({k: v[:sizes[0]] for k, v in arrays.items()})
  test = ArraySplit({k: v[sizes[0]:] for k, v in arrays.items()})
  fields = {"ids": Field((len(FIELDS),), "int32"),
            "click": Field((), "int32", ("no click", "click")),
            "p_click": Field((), "float32")}
  return Dataset(train, test, fields, Task("classification", ("ids",), "click", 2),
                 name="clicklog")
