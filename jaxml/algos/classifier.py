"""Supervised classification with softmax cross-entropy (optional label smoothing).

`config.dp.enabled` trains it with DP-SGD instead: Poisson-sampled batches, per-example
clipping (ghost norms where the model allows), Gaussian noise calibrated to the budget, and
the privacy spent logged as `dp/epsilon`. What the plan fixed (the calibrated noise
multiplier, the sampling, δ, the accountant, the final ε) is the run's `record`, so its ε can
be recomputed from the workdir. The algorithm contract is `jaxml/algos/base.py`.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxml import models
from jaxml.algos.base import Algorithm, BatchSampler
from jaxml.core import checks, files, rng
from jaxml.core.checkpoint import Checkpointer
from jaxml.core.optim import check_optimizer, make_optimizer
from jaxml.core.state import TrainState, split_model
from jaxml.data import augment
from jaxml.data.base import check_labels
from jaxml.errors import ConfigError
from jaxml.losses.classification import cross_entropy, masked_cross_entropy
from jaxml.models import activations, cnn, readout, resnet, resnet1d
from jaxml.privacy import accounting, dp_sgd, ghost



# The classification models' settings (jaxml/models/): SupCon's encoder shares them. A key
# several models share admits any of their values here; each model's `create` refuses the
# values it does not take (resnet1d: depth 50, the 2-D stems).
MODEL_RULES = {
    "model.name": checks.one_of(*models.available()), "model.num_classes": checks.count(0),
    "model.channels": checks.each(checks.count()), "model.dense": checks.count(),
    "model.pool": checks.one_of(*cnn.POOLS), "model.hidden": checks.each(checks.count()),
    "model.depth": checks.one_of(*sorted(resnet.DEPTHS)),
    "model.stem": checks.one_of(*resnet.STEMS, *resnet1d.STEMS),
    "model.norm": checks.one_of(*resnet.NORMS), "model.width": checks.count(),
    "model.zero_init_residual": checks.flag, "model.activation": activations.rule,
    "model.vocab": checks.count(), "model.embed_dim": checks.count(),
    "model.layer_norm": checks.flag, **readout.RULES}
RULES = {
    **MODEL_RULES, **augment.RULES,
    "label_smoothing": checks.in_range(0, 1, open_high=True),  # 1 would ignore the labels
    "dp.enabled": checks.flag, "dp.l2_clip": checks.positive,
    "dp.noise_multiplier": checks.non_negative, "dp.target_epsilon": checks.non_negative,
    "dp.max_epsilon": checks.non_negative, "dp.delta": checks.in_range(0, 1, open_high=True),
    "dp.sampling": checks.one_of(*accounting.SAMPLINGS),
    "dp.accountant": checks.one_of(*accounting.ACCOUNTANTS),
    "dp.clipping": checks.one_of(*dp_sgd.CLIPPING),
    "dp.microbatch_size": checks.count(0), "dp.allow_fallback": checks.flag}


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`)."""
  checks.check_values(config, RULES)
  check_optimizer(config.optimizer)


def check_extension(config, name: str, rules) -> None:
  """The data-free checks of an algorithm that trains this classifier another way
  (`jaxml/algos/<name>.py`: sifer, distill, jtt, group_dro): its config block `name` is
  there, `rules` hold (this module's RULES among them), DP-SGD is off (only this module's
  own step is private and accounted for) and the optimizer is valid."""
  if name not in config:
    raise ConfigError(f"the config lacks the {name} block: start from "
                      f"experiments/early_readouts.py:method={name}")
  checks.check_values(config, rules)
  if checks.lookup(config, "dp.enabled", False):
    raise ConfigError(f"dp.enabled=True: {name} has no DP-SGD training (only the classifier's "
                      "own step is private and accounted for); train it without dp")
  check_optimizer(config.optimizer)


def build(config, dataset) -> Algorithm:
  """A classifier of the data's task: its input field in, its integer target out."""
  check_config(config)
  inputs, target = fields_of(dataset)
  augment.check(config.augment, dataset.fields[inputs].shape)
  classes = num_classes(config, dataset)
  check_labels(dataset, classes)
  make_model = lambda rngs: models.create(config.model, num_classes=classes,
                                          input_shape=dataset.fields[inputs].shape, rngs=rngs)
  tx = make_optimizer(config.optimizer, config.num_steps)
  init = lambda key: TrainState.create(make_model(nnx.Rngs(params=key)), tx)
  common = dict(init=init, eval_step=make_eval_step(inputs, target),
                features=make_features(inputs), predict=make_predict(inputs), target=target,
                headline=("eval/accuracy", "probe/test_accuracy"))
  if not config.dp.enabled:
    return Algorithm(train_step=make_train_step(config, tx, inputs, target), **common)
  dp_plan = _dp_plan(config, dataset)  # raises ConfigError on a bad or unaffordable dp block
  try:
    ghost.check_per_example(nnx.eval_shape(lambda: make_model(nnx.Rngs(0))))
  except ValueError as err:
    raise ConfigError(f"dp: {err}") from None
  tracker = accounting.BudgetTracker(dp_plan.spec)
  return Algorithm(
      train_step=make_dp_train_step(config, tx, dp_plan, inputs, target),
      # Batches are sampled as the accounting assumes (Poisson, padded with a mask).
      sampler=BatchSampler(dp_sgd.batch_sampler(dp_plan, len(dataset.train)),
                           dp_plan.batch_size),
      host_metrics=lambda step: {"dp/epsilon": tracker.epsilon_at(step)},
      # The same memoised number the last train row logs.
      record={**dp_plan.record(len(dataset.train)), "dp/epsilon": tracker.final_epsilon},
      **common)


def fields_of(dataset) -> tuple[str, str]:
  """(input field, target field) of a classification data set; ConfigError otherwise."""
  task = dataset.task
  if task.kind != "classification" or len(task.inputs) != 1:
    raise ConfigError(f"data {dataset.name!r} is a {task.kind!r} task with inputs "
                      f"{list(task.inputs)}; this algorithm needs classification from one input")
  return task.inputs[0], task.target


def num_classes(config, dataset) -> int:
  return int(config.model.get("num_classes", 0) or dataset.num_classes)


def _dp_plan(config, dataset) -> dp_sgd.DpSgdPlan:
  return dp_sgd.plan(config.dp, num_examples=len(dataset.train), batch_size=config.batch_size,
                     num_steps=config.num_steps, num_devices=jax.device_count())


def make_train_step(config, tx, input_field: str, target: str):
  smoothing = float(config.label_smoothing)

  def train_step(state: TrainState, batch, key):
    inputs = augment.augment(rng.stream(key, "augment"), batch[input_field], config.augment)

    def loss_fn(params):
      # copy=True: BatchNorm statistics are mutated inside grad, at a deeper trace level.
      model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
      logits = model(inputs, train=True)
      ce = masked_cross_entropy(logits, batch[target], label_smoothing=smoothing)
      return ce.mean, (ce, split_model(model)[2])

    (loss, (ce, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(tx, grads, model_state=model_state), {
        "loss": loss, "accuracy": ce.accuracy, "grad_norm": optax.tree.norm(grads)}

  return train_step


def make_dp_train_step(config, tx, dp_plan: dp_sgd.DpSgdPlan, input_field: str, target: str):
  """DP-SGD: clipped per-example gradients, Gaussian noise, then the optimizer."""
  loss = lambda logits, examples: cross_entropy(logits, examples[target])

  def train_step(state: TrainState, batch, key):
    inputs = augment.augment(rng.stream(key, "augment"), batch[input_field], config.augment)
    private_grad = dp_sgd.private_gradient(dp_plan, loss, state.graphdef, input_field)
    grads, losses, valid, info = private_grad(rng.stream(key, "dp_noise"), state.params,
                                              state.model_state, {**batch, input_field: inputs})
    count = jnp.maximum(jnp.sum(valid), 1)
    return state.apply_gradients(tx, grads), {"loss": jnp.sum(losses) / count, **info}

  return train_step


def make_eval_step(input_field: str, target: str):
  def eval_step(state: TrainState, batch):
    ce = masked_cross_entropy(state.model()(batch[input_field], train=False), batch[target],
                              batch["mask"])
    return {"loss": ce.total, "accuracy": ce.correct, "count": ce.count}

  return eval_step


def make_features(input_field: str):
  """Pre-head features of the inputs in eval mode: what a linear probe is fitted on (any
  model of `jaxml.models` has `features`)."""
  return lambda state, batch: state.model().features(batch[input_field], train=False)


def make_predict(input_field: str):
  """Class probabilities [B, C] in eval mode: scores to threshold or calibrate after training."""
  return lambda state, batch: jax.nn.softmax(
      state.model()(batch[input_field], train=False).astype(jnp.float32), axis=-1)


# Algorithms whose TrainState is exactly this module's (JTT trains it on other batches), so
# that `restore` opens their runs.
CLASSIFIER_STATE = ("classifier", "jtt")


def trained_config(workdir: str, key: str) -> ml_collections.ConfigDict:
  """The resolved config (config.json) of the classifier run in `workdir`, which another
  algorithm names with its config `key` (a teacher, JTT's first run); ConfigError naming
  `key` unless it is a jaxml workdir of a run of one model with the classifier's state
  (CLASSIFIER_STATE)."""
  where = f"{key}={workdir}"
  try:
    config = ml_collections.ConfigDict(
        files.read_json(os.path.join(files.as_str(workdir), "config.json")))
  except FileNotFoundError:
    raise ConfigError(f"{where}: no config.json there, so not a jaxml workdir; it must be "
                      "the workdir of a trained classifier run") from None
  if config.get("algo") not in CLASSIFIER_STATE:
    raise ConfigError(f"{where} is a {config.get('algo', config.get('study'))!r} run; it must "
                      f"be a classifier run (algo {' or '.join(CLASSIFIER_STATE)})")
  count = config.get("replicas", {}).get("count", 0)
  if count:
    raise ConfigError(f"{where} trained {count} replicas side by side; it must be a run of "
                      "one model")
  return config


def restore(workdir: str, dataset, key: str):
  """(config, algorithm, state) of the classifier run in `workdir` (`trained_config`), built
  for `dataset` and restored from its newest checkpoint onto one local device (every host
  holds it whole). The opening of a trained run that an algorithm may do: `jaxml.trained`
  sits above the algorithms. ConfigError naming `key` where it has no readable checkpoint or
  its model does not fit this data (another input shape or number of classes)."""
  config = trained_config(workdir, key)
  inputs = dataset.fields[fields_of(dataset)[0]]
  unfit = ConfigError(
      f"{key}={workdir}: its model does not fit a classifier of this data ({dataset.name!r}: "
      f"inputs of shape {list(inputs.shape)}, {num_classes(config, dataset)} classes); it "
      "must be trained on data of the same input shape and classes")
  try:
    algorithm = build(config, dataset)  # e.g. its image augmentation on this data's vectors
  except ConfigError:
    raise unfit from None
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(algorithm.init, jax.random.key(0)))
  checkpointer = Checkpointer(files.as_str(workdir))
  try:
    state = checkpointer.restore_latest(abstract)  # other shapes: ConfigError
  except ConfigError:
    raise unfit from None
  finally:
    checkpointer.close()
  if state is None:
    raise ConfigError(f"{key}={workdir} has no readable checkpoint")
  return config, algorithm, state


def predicted_classes(algorithm: Algorithm, state, split, batch_size: int) -> np.ndarray:
  """argmax of `algorithm.predict` over every example of `split` [N], in batches of
  `batch_size` (the tail padded with the last example, so it compiles once)."""
  predict = jax.jit(algorithm.predict)
  n = len(split)
  out = []
  for start in range(0, n, batch_size):
    rows = np.minimum(np.arange(start, start + batch_size), n - 1)
    out.append(np.asarray(predict(state, split.read(rows))).argmax(-1))
  return np.concatenate(out)[:n]
