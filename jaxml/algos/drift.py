"""Learning under concept drift by reweighting training examples by content and age (Jain &
Shenoy, "Instance-Conditional Timescales of Decay for Non-Stationary Learning", AAAI 2024,
arXiv 2212.05908: MUSCATEL; issue 20).

The data are time-stamped (`Task.timestamp`, an integer period 0..P-1 per example); the
training split holds periods [0, T), T = its largest period + 1, read from the data. The age of
a training example is T - 1 - period. Each example's cross-entropy l_i is scaled by a weight
w_i; `drift.weighting` says which:

  learned      w(x, age) = sum_k a_k(x) exp(-age / tau_k), a = softmax(helper(x)) over K
               fixed timescales log-spaced in [tau_min, tau_max] (K = 1: tau_min), the
               helper an MLP (one hidden layer of `helper_hidden`) on the flattened input,
               meta-learned (below). Its head starts at zero: a uniform mixture at first.
               With `drift.unit_mass`, kernel k is divided by its mean over the training
               examples' ages (`kernel_mass`), so every timescale gives an example the same
               total weight over the window: a timescale moves weight between ages, not
               between examples (on data whose clusters are spread evenly over the periods,
               not between clusters).
  joint        w(x, age) = softplus(helper([x, age / max(T - 1, 1)])): an unconstrained
               function of content and age (the paper's "joint" baseline), meta-learned the
               same way; zero head at first, so every weight starts equal (ERM).
  uniform      w = 1 (ERM).        last         w = 1[age == 0] (the last period only).
  exponential  w = exp(-age/tau).  linear       w = max(0, 1 - age/tau).

The schedule (`drift.schedule`): offline, every batch is drawn from the whole training window
and ages count from its end (above). continual (the paper's continual-learning variant, and
with uniform weights plain sequential fine-tuning): the steps run in T stages in temporal
order, stage s the steps with floor(step * T / num_steps) = s; its batches come only from
its bucket, periods [s - bucket_periods + 1, s] (`bucket_sampler`, in epochs over the
bucket), its ages count from s (age = s - period, computed in the step from `state.step`),
its meta batch (learned, joint) from periods [s - meta_periods + 1, s], unit_mass
normalises over the ages 0..bucket_periods - 1 of a full bucket, and the optimizer's
learning-rate schedule (warmup, cosine decay) runs afresh in every stage, as when a deployed
model is fine-tuned on each new bucket (one schedule over the whole run would leave the
latest stages almost no learning rate). The model carries over from stage to stage; older
data reach it only through its parameters.

Weights are normalised per batch to mean 1 over its valid rows (`normalise`), so the loss
keeps ERM's scale whatever the decay, and only relative weights matter; the train loss is
mean_i w_i l_i over valid rows. A batch with no row of non-zero weight (e.g. `last` on a
batch without a row of the last period) has loss 0 and a zero gradient.

The meta step (learned, joint), inside one jitted train step; theta the classifier's
parameters, phi the helper's (TrainState.extra["helper"], its Adam state in
extra["helper_opt"]):
  1. V: a meta batch of `batch_size` examples drawn uniformly with replacement (key stream
     "meta") from the training examples of the latest `meta_periods` periods (continual: of
     the stage's), whose inputs and labels are held on the device as constants of the step
     (`build` refuses a set over META_BYTES; continual holds every training period); B is
     the runner's batch, from the whole training window (continual: the bucket).
  2. theta'(phi) = theta - inner_lr * grad_theta [mean_i w_i(phi) l_i(theta)] over B (one
     SGD step, whatever `optimizer` is);
     phi <- Adam(meta_lr) step on grad_phi mean_{j in V} l_j(theta'(phi)), exact second-order
     autodiff through the look-ahead (`lookahead_gradient`).
  3. theta <- the main optimizer's step on grad_theta mean_i w_i(phi_new) l_i(theta), the
     weights held fixed (stop-gradient).
This is the one-step look-ahead approximation of learning-to-reweight (Ren et al. 2018) and
Meta-Weight-Net (Shu et al. 2019), which the paper builds on, of its nested objective: the
scorer's parameters minimise the loss on "future" data of the model trained on the weighted
loss, min_phi L_future(theta*(phi)), theta*(phi) = argmin_theta sum_i w_i(phi) l_i(theta).
Where this departs from the paper, as far as we can tell (only its abstract and introduction
were readable here, so the details of its Section 3 could not be checked): the "future" data
are the latest `meta_periods` training periods, which also stay in the training window (B may
hold them); the inner problem is approximated by one SGD step from the current theta (not
solved, nor unrolled further); the scorer sees the raw flattened input, not the main model's
features; and the weights are normalised per batch.

Status. No sign error: Adam minimises L_V, tau index k is softmax output k (ascending taus),
`timescale/cluster_<c>` is E_a[tau] averaged over cluster c's training rows, age 0 is the last
training period and V is drawn from it only. The reversed (or all-tau_max) timescales on
drifting_mixture had three causes, found with per-cluster meta-gradients of the look-ahead (a
table of assignment logits per cluster, full training set as B, the 400 latest examples as V,
and the directional derivative of each cluster's E_a[tau] along the helper's descent): (1)
without unit_mass, a longer timescale raises an example's weight at every age > 0, so under
per-batch normalisation the timescales also set each cluster's share: at init the gradient on
a cluster's timescale equalled the gradient on its share (d E[tau] +0.76 and -0.74 for
clusters 0 and 1, against +0.79 and -0.80 for a pure share logit), i.e. it tracked which
cluster the random model fitted worst, not drift; (2) at meta_lr 1e-2 Adam, whose steps do not
shrink with the gradient, saturated the helper's softmax within 10-25 steps (cluster
timescales 14.4, 4.8, 11.1, 15.1 at step 10), while the model was still near its random init,
after which the softmax's gradient vanished; (3) at inner_lr 0.1 the mean of the meta-gradient
over 30 128-row batches pushed every cluster's timescale up where the full-batch one pushed
every cluster's down, most of all the fast ones (step 50, unit_mass: full batch -4, -4, -8,
-13, 128-row batches +12, +14, +1, -2); a smaller inner step shrinks the gap but does not
remove it, and its cause (the inner step's second-order term, a penalty on concentrated
weights in a small batch, or the normalisation over a batch of random composition) is
untested. With unit_mass, meta_lr 1e-3 and inner_lr 0.01 (experiments/drift.py's defaults),
2000 steps, seed 0, the learned timescales were 13.8, 10.6, 2.2, 4.8 periods for rates 0,
0.05, 0.15, 0.3 (static and slow long, drifting short; the fastest cluster not below the 0.15
one), future accuracy 0.803 against exponential tau=4 0.782 and uniform 0.708; without
unit_mass, 0.780 and timescales 3.1, 2.3, 4.9, 7.2, in the old reversed order. Seeds 1 and 2
(model and batches; same data) kept the order (15.9, 15.9, 3.7, 6.6 and 15.7, 15.8, 5.3, 6.8)
but not the accuracy: learned 0.772 and 0.762, exponential 0.778 and 0.777, uniform 0.710 and
0.712; over seeds 0-2 learned 0.779 and exponential 0.779, so the learned timescales now track
the drift yet do not beat a single exponential decay (tau=4, not tuned per seed) here. Each
change is needed in a trace of joint training outside the runner (its own batch order; taus at
step 2000): all three off, or unit_mass alone, every cluster at 16.0; meta_lr 1e-3 alone 13.0,
10.2, 10.4, 16.0; meta_lr 1e-3 with unit_mass 15.9, 15.9, 15.1, 16.0; meta_lr 1e-3 and
inner_lr 0.01 without unit_mass 12.4, 2.9, 4.3, 7.1; unit_mass and inner_lr 0.01 at meta_lr
1e-2 16.0, 16.0, 11.6, 16.0; all three 15.8, 15.9, 3.9, 6.8. One data draw; the one-step
objective is still greedy and V still lies inside the training window.

The study (experiments/drift_study.py, 3 seeds; numbers in benchmarks/README.md): on the
mixture the tuned single decays (exponential tau=1: 82.6, linear tau=2: 83.3) and sequential
fine-tuning (85.2) beat learned (77.9), whose timescales order by drift rate but stay long; on
drifting_digits the helper puts every cluster, the static one included, on tau_min (0.5), so
learned (82.3) is close to `last` (84.7) and above the tuned decays (78.8, 78.1). Holding half
of the latest period out of training as V (one seed, outside the runner) left the digits'
timescales at 0.51-0.54: the collapse is not V's overlap with the training window.

Fixed weightings skip the meta step: one weighted step, costing what the classifier's does.
Model, optimizer, augmentation, eval and predict are the classifier's. Metrics: `loss`
(weighted), `ce` (unweighted mean), `accuracy`, `grad_norm`, `weight_recent` and
`weight_older` (mean weight of the batch's rows younger than `meta_periods`, and of the rest;
0 where there are none), and for the meta-learned ones `meta_loss` (L_V at theta', before
the helper moves) and, for learned, `timescale` (the batch's mean E_a[tau] after it moved).
`final_metrics` (learned, data with an integer `cluster` field) reports the helper's mean
assigned timescale E_a[tau] over each cluster's training examples, `timescale/cluster_<c>`: the
study's diagnostic, learned timescale against each cluster's true drift rate. The algorithm
contract is `jaxml/algos/base.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxml.algos import classifier
from jaxml.algos._drift_schedule import Schedule, bucket_sampler, meta_rows
from jaxml.algos.base import Algorithm
from jaxml.core import checks, rng
from jaxml.core.optim import make_optimizer
from jaxml.core.state import TrainState, split_model
from jaxml.data import augment
from jaxml.data.base import labels_of
from jaxml.errors import ConfigError
from jaxml.losses.classification import cross_entropy, masked_cross_entropy
from jaxml.models import mlp

WEIGHTINGS = ("learned", "uniform", "last", "exponential", "linear", "joint")
META_LEARNED = ("learned", "joint")
SCHEDULES = ("offline", "continual")
HELPER, HELPER_OPT = "helper", "helper_opt"
META_BYTES = 256 * 2**20  # the meta set is a constant of the step: keep it small

RULES = {**classifier.RULES,
         "drift.weighting": checks.one_of(*WEIGHTINGS), "drift.timescales": checks.count(1),
         "drift.tau_min": checks.positive, "drift.tau_max": checks.positive,
         "drift.tau": checks.positive, "drift.helper_hidden": checks.count(1),
         "drift.meta_lr": checks.positive, "drift.inner_lr": checks.positive,
         "drift.meta_periods": checks.count(1), "drift.unit_mass": checks.flag,
         "drift.schedule": checks.one_of(*SCHEDULES), "drift.bucket_periods": checks.count(1)}
REQUIRED = tuple(key for key in RULES if key.startswith("drift."))


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`)."""
  classifier.check_extension(config, "drift", RULES)
  missing = [key for key in REQUIRED if checks.lookup(config, key) is None]
  if missing:
    raise ConfigError(f"drift needs {', '.join(missing)}: start from experiments/drift.py")
  block = config.drift
  if block.tau_max < block.tau_min:
    raise ConfigError(f"drift.tau_max={block.tau_max!r} must be >= drift.tau_min="
                      f"{block.tau_min!r}")
  if block.schedule == "continual":
    if block.meta_periods > block.bucket_periods:
      raise ConfigError(f"drift.meta_periods={block.meta_periods} must be <= "
                        f"drift.bucket_periods={block.bucket_periods}: the continual schedule "
                        "decides only over its bucket's data")


def build(config, dataset) -> Algorithm:
  """The classifier of `dataset` trained on the drift-weighted loss."""
  check_config(config)
  block = config.drift
  inputs, target = classifier.fields_of(dataset)
  timestamp, train_periods = time_of(dataset, int(block.meta_periods))
  schedule = Schedule.of(config, train_periods)
  base = classifier.build(config, dataset)  # its model, eval, predict and checks of the data
  # continual: the learning-rate schedule starts afresh at every stage
  tx = make_optimizer(config.optimizer, config.num_steps, schedule.restarts)
  weighting = block.weighting
  taus = timescales(int(block.timescales), float(block.tau_min), float(block.tau_max))
  periods = labels_of(dataset.train, timestamp)
  mass = None
  if block.unit_mass:  # over the ages of the whole window (continual: of the last bucket)
    last = periods[periods >= train_periods - schedule.window]
    mass = kernel_mass(train_periods - 1 - last, taus)
  weigher = Weigher(weighting, taus, float(block.tau), train_periods, mass)
  helper = None
  if weighting in META_LEARNED:
    in_dim = math.prod(dataset.fields[inputs].shape)
    helper = Helper(in_dim + (weighting == "joint"), int(block.helper_hidden),
                    len(taus) if weighting == "learned" else 1, optax.adam(float(block.meta_lr)))
    # offline: the latest meta_periods; continual: every period, each stage drawing its own
    meta_set = latest_examples(dataset, timestamp, inputs, target,
                               0 if schedule.continual else train_periods - schedule.meta_periods)

  def init(key):
    state = base.init(key)
    if helper is None:
      return state
    params = helper.init(rng.stream(key, "helper"))
    return state.replace(extra={HELPER: params, HELPER_OPT: helper.tx.init(params)})

  step = make_train_step(config, tx, weigher, schedule, helper, meta_set if helper else None,
                         inputs, target, timestamp)
  final = None
  if weighting == "learned" and "cluster" in dataset.fields and (
      dataset.fields["cluster"].is_integer_scalar):
    final = cluster_timescales(dataset, inputs, weigher, helper, config.eval_batch_size)
  sampler = None
  if schedule.continual:
    empty = np.flatnonzero(np.bincount(periods, minlength=train_periods) == 0)
    if len(empty):
      raise ConfigError(f"data {dataset.name!r}: training period(s) {empty.tolist()} have no "
                        "examples, so the continual schedule has nothing to train on there")
    sampler = bucket_sampler(periods, schedule, int(config.batch_size))
  return dataclasses.replace(base, init=init, train_step=step, final_metrics=final,
                             sampler=sampler)


def time_of(dataset, meta_periods: int) -> tuple[str, int]:
  """(timestamp field, T = training periods) of `dataset`; ConfigError unless it has an
  integer timestamp, training periods >= 0, test periods all >= T and T >= meta_periods."""
  field = dataset.task.timestamp
  if field is None:
    raise ConfigError(f"data {dataset.name!r} has no timestamp field (Task.timestamp): drift "
                      "weights examples by their age, so it needs time-stamped data, e.g. "
                      "data.source=drifting_mixture")
  if not dataset.fields[field].is_integer_scalar:
    raise ConfigError(f"data {dataset.name!r}: its timestamp {field!r} must be an integer "
                      f"period index, not {dataset.fields[field].dtype}")
  periods = labels_of(dataset.train, field)
  if periods.min() < 0:
    raise ConfigError(f"data {dataset.name!r}: training periods must be >= 0, the data has "
                      f"{periods.min()}")
  train_periods = int(periods.max()) + 1
  test = labels_of(dataset.test, field)
  if len(test) and test.min() < train_periods:
    raise ConfigError(f"data {dataset.name!r}: test period {test.min()} comes before the end "
                      f"of training (periods 0..{train_periods - 1}); drift evaluates on "
                      "later periods only")
  if meta_periods > train_periods:
    raise ConfigError(f"drift.meta_periods={meta_periods} must be <= the data's "
                      f"{train_periods} training periods")
  return field, train_periods


def latest_examples(dataset, timestamp: str, inputs: str, target: str, first: int):
  """(inputs, labels, starts) of the training examples of periods >= `first` in period
  order, as NumPy arrays; starts [T - first + 1]: the row where period first + i begins (the
  last entry, the row count)."""
  periods = labels_of(dataset.train, timestamp)
  rows = np.flatnonzero(periods >= first)
  rows = rows[np.argsort(periods[rows], kind="stable")]
  examples = dataset.train.read(rows)
  starts = np.searchsorted(periods[rows], np.arange(first, int(periods.max()) + 2))
  meta = (np.asarray(examples[inputs]), np.asarray(examples[target]), starts.astype(np.int32))
  if sum(a.nbytes for a in meta) > META_BYTES:
    raise ConfigError(f"drift.meta_periods: the latest periods' {len(rows)} examples take "
                      f"over {META_BYTES >> 20} MiB, held by every step; use fewer periods")
  return meta


# The weights: pure functions of ages, assignment logits and timescales.


def timescales(count: int, tau_min: float, tau_max: float) -> np.ndarray:
  """K fixed timescales [K] float32, log-spaced from tau_min to tau_max (K = 1: tau_min)."""
  if count < 1:
    raise ValueError(f"timescales: K={count} must be >= 1")
  if count == 1:
    return np.array([tau_min], np.float32)
  return np.geomspace(tau_min, tau_max, count).astype(np.float32)


def mixture_weights(assignment_logits, ages, taus, mass=None):
  """w_i = sum_k softmax(assignment_logits_i)_k exp(-ages_i / taus_k) / mass_k: [B, K], [B],
  [K] -> [B]; mass None: 1 (the kernels unnormalised)."""
  assignment = jax.nn.softmax(assignment_logits.astype(jnp.float32), axis=-1)
  kernels = jnp.exp(-ages[:, None] / jnp.asarray(taus))
  if mass is not None:
    kernels = kernels / jnp.asarray(mass, jnp.float32)
  return jnp.sum(assignment * kernels, axis=-1)


def kernel_mass(ages, taus) -> np.ndarray:
  """[K] float32: the mean of exp(-age / tau_k) over the training examples' `ages`. Dividing
  kernel k by it gives every timescale the same total weight over the training set, so
  that, on data whose clusters are spread evenly over the periods, an example's timescale
  shifts its weight between ages but not its cluster's share of the weight."""
  ages = np.asarray(ages, np.float64)
  return np.exp(-ages[:, None] / np.asarray(taus, np.float64)).mean(0).astype(np.float32)


def mean_timescale(assignment_logits, taus):
  """E_a[tau] = sum_k a_k tau_k per row [B]."""
  return jax.nn.softmax(assignment_logits.astype(jnp.float32), axis=-1) @ jnp.asarray(taus)


def exponential_decay(ages, tau: float):
  return jnp.exp(-ages / tau)


def linear_decay(ages, tau: float):
  return jnp.maximum(0.0, 1.0 - ages / tau)


def last_period(ages):
  return (ages == 0).astype(jnp.float32)


def normalise(weights, mask=None):
  """`weights` [B] scaled to mean 1 over the valid rows (mask 1), 0 on padding; all 0 where
  no valid row has a non-zero weight."""
  if mask is None:
    mask = jnp.ones(weights.shape, jnp.float32)
  weights = weights * mask
  mean = jnp.sum(weights) / jnp.maximum(jnp.sum(mask), 1.0)
  return weights / jnp.where(mean > 0, mean, 1.0)


def weighted_mean(weights, losses, mask=None):
  """mean over valid rows of w_i l_i: sum_i w_i l_i m_i / sum_i m_i."""
  if mask is None:
    mask = jnp.ones(losses.shape, jnp.float32)
  return jnp.sum(weights * losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@dataclasses.dataclass(frozen=True)
class Weigher:
  """The unnormalised weights of a batch under `weighting` (ages [B] float)."""

  weighting: str
  taus: np.ndarray
  tau: float
  train_periods: int
  mass: np.ndarray | None = None  # learned: kernel_mass, or None (unit_mass off)

  def fixed(self, ages):
    return {"uniform": lambda: jnp.ones(ages.shape, jnp.float32), "last": lambda: last_period(
        ages), "exponential": lambda: exponential_decay(ages, self.tau),
            "linear": lambda: linear_decay(ages, self.tau)}[self.weighting]()

  def helper_input(self, x, ages):
    flat = x.reshape(x.shape[0], -1).astype(jnp.float32)
    if self.weighting != "joint":
      return flat
    return jnp.concatenate([flat, (ages / max(self.train_periods - 1, 1))[:, None]], axis=-1)

  def learned(self, outputs, ages):
    """Weights from the helper's outputs [B, K] (learned) or [B, 1] (joint)."""
    if self.weighting == "joint":
      return jax.nn.softplus(outputs[:, 0].astype(jnp.float32))
    return mixture_weights(outputs, ages, self.taus, self.mass)


@dataclasses.dataclass(frozen=True)
class Helper:
  """The scorer: an MLP of one hidden layer, `outputs` wide, its head initialised to zero."""

  in_dim: int
  hidden: int
  outputs: int
  tx: optax.GradientTransformation

  def _model(self, key):
    model = mlp.MLP(self.in_dim, (self.hidden,), self.outputs, rngs=nnx.Rngs(params=key))
    model.head.kernel[...] = jnp.zeros(model.head.kernel.shape, model.head.kernel.dtype)
    model.head.bias[...] = jnp.zeros(model.head.bias.shape, model.head.bias.dtype)
    return model

  def init(self, key):
    return split_model(self._model(key))[1]

  @functools.cached_property
  def graphdef(self):
    return split_model(nnx.eval_shape(lambda: self._model(jax.random.key(0))))[0]

  def apply(self, params, features):
    return nnx.merge(self.graphdef, params)(features)


def lookahead_gradient(weights_fn, losses_fn, meta_loss_fn, helper_params, params,
                       inner_lr: float, mask=None):
  """(L_V(theta'), grad_phi L_V(theta'(phi))) at phi = `helper_params`, where
  theta'(phi) = params - inner_lr * grad_theta weighted_mean(weights_fn(phi),
  losses_fn(theta), mask): the meta-gradient of a one-step look-ahead, differentiated exactly
  (second order) through the inner step. `weights_fn(phi) -> [B]`, `losses_fn(theta) -> [B]`,
  `meta_loss_fn(theta) -> scalar`: any model, e.g. a linear one in the tests."""

  def meta_objective(phi):
    inner = lambda theta: weighted_mean(weights_fn(phi), losses_fn(theta), mask)
    grads = jax.grad(inner)(params)
    return meta_loss_fn(jax.tree.map(lambda p, g: p - inner_lr * g, params, grads))

  return jax.value_and_grad(meta_objective)(helper_params)


def make_train_step(config, tx, weigher: Weigher, schedule: Schedule, helper: Helper | None,
                    meta_set, input_field, target, timestamp):
  smoothing = float(config.label_smoothing)
  inner_lr = float(config.drift.inner_lr)
  meta_batch = int(config.batch_size)
  meta_periods = int(config.drift.meta_periods)

  def per_example_losses(state, params, x, labels):
    """Cross-entropy per row in train mode; BatchNorm statistics discarded."""
    model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
    return cross_entropy(model(x, train=True), labels, smoothing)

  def train_step(state: TrainState, batch, key):
    x = augment.augment(rng.stream(key, "augment"), batch[input_field], config.augment)
    labels = batch[target]
    mask = batch.get("mask")
    mask = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    now = schedule.stage(state.step)
    ages = (now - batch[timestamp]).astype(jnp.float32)
    metrics, extra = {}, state.extra
    if helper is None:
      weights = normalise(weigher.fixed(ages), mask)
    else:
      features = weigher.helper_input(x, ages)
      weights_fn = lambda phi: normalise(weigher.learned(helper.apply(phi, features), ages), mask)
      rows = meta_rows(rng.stream(key, "meta"), meta_set[2], now, meta_batch, schedule)
      meta_x, meta_labels = jnp.asarray(meta_set[0])[rows], jnp.asarray(meta_set[1])[rows]
      meta_loss, phi_grads = lookahead_gradient(
          weights_fn, lambda theta: per_example_losses(state, theta, x, labels),
          lambda theta: jnp.mean(per_example_losses(state, theta, meta_x, meta_labels)),
          state.extra[HELPER], state.params, inner_lr, mask)
      updates, helper_opt = helper.tx.update(phi_grads, state.extra[HELPER_OPT],
                                             state.extra[HELPER])
      phi = optax.apply_updates(state.extra[HELPER], updates)
      extra = {HELPER: phi, HELPER_OPT: helper_opt}
      outputs = helper.apply(phi, features)
      weights = jax.lax.stop_gradient(normalise(weigher.learned(outputs, ages), mask))
      metrics["meta_loss"] = meta_loss
      if weigher.weighting == "learned":
        metrics["timescale"] = weighted_mean(mean_timescale(outputs, weigher.taus), 1.0,
                                             mask)

    def loss_fn(params):
      # copy=True: BatchNorm statistics are mutated inside grad, at a deeper trace level.
      model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
      logits = model(x, train=True)
      ce = masked_cross_entropy(logits, labels, mask, smoothing)
      losses = cross_entropy(logits, labels, smoothing)
      return weighted_mean(weights, losses, mask), (ce, split_model(model)[2])

    (loss, (ce, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    recent = (ages < meta_periods) * mask
    older = (ages >= meta_periods) * mask
    metrics.update(
        loss=loss, ce=ce.mean, accuracy=ce.accuracy, grad_norm=optax.tree.norm(grads),
        weight_recent=jnp.sum(weights * recent) / jnp.maximum(jnp.sum(recent), 1.0),
        weight_older=jnp.sum(weights * older) / jnp.maximum(jnp.sum(older), 1.0))
    return state.apply_gradients(tx, grads, model_state=model_state, extra=extra), metrics

  return train_step


def cluster_timescales(dataset, input_field: str, weigher: Weigher, helper: Helper,
                       batch_size: int):
  """final_metrics: the helper's mean E_a[tau] over each cluster's training examples."""
  clusters = labels_of(dataset.train, "cluster")
  timescale = jax.jit(lambda phi, x: mean_timescale(
      helper.apply(phi, weigher.helper_input(x, None)), weigher.taus))

  def final_metrics(state) -> dict[str, float]:
    phi, n, values = state.extra[HELPER], len(dataset.train), []
    for start in range(0, n, batch_size):  # the tail padded with the last row: one compile
      rows = np.minimum(np.arange(start, start + batch_size), n - 1)
      values.append(np.asarray(timescale(phi, dataset.train.read(rows)[input_field])))
    values = np.concatenate(values)[:n]
    return {f"timescale/cluster_{c}": float(values[clusters == c].mean())
            for c in np.unique(clusters)}

  return final_metrics
