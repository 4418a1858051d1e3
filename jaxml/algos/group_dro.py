"""GroupDRO (Sagawa et al. 2020, the online algorithm): minimise the worst group's loss.

An oracle baseline: training reads a group field of the data (`group_dro.group`, one of
`Task.groups`, e.g. the (label, shortcut) pairs of jaxml/data/spurious.py). The state keeps a
weight per group, `extra["group_weights"]` q [G], uniform at first. At each step, with l_g the
mean cross-entropy of the batch's rows of group g (0 for a group the batch lacks):

  q <- q * exp(step_size * l_g), normalised to sum 1    (exponentiated gradient; no gradient)
  loss = sum_g q_g * l_g                                 (the optimizer's, through l_g)

`step_size` 0 keeps q uniform: the loss is then the sum of the present groups' means over G
(an absent group's weight idles), not ERM's mean over rows. Model, optimizer, augmentation and
eval are the classifier's; G is static, from the data (its largest group id + 1, or the
field's named categories). The algorithm contract is `jaxml/algos/base.py`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxml.algos import classifier
from jaxml.algos.base import Algorithm
from jaxml.core import checks, rng
from jaxml.core.optim import make_optimizer
from jaxml.core.state import TrainState, split_model
from jaxml.data import augment
from jaxml.data.base import labels_of
from jaxml.errors import ConfigError
from jaxml.losses.classification import cross_entropy, masked_cross_entropy

WEIGHTS = "group_weights"


def _field_name(value) -> str | None:
  return None if isinstance(value, str) and value else "must name a group field of the data"


RULES = {"group_dro.group": _field_name, "group_dro.step_size": checks.non_negative,
         **classifier.RULES}


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`)."""
  classifier.check_extension(config, "group_dro", RULES)


def build(config, dataset) -> Algorithm:
  """A classifier of `dataset` trained on the group-weighted loss."""
  check_config(config)
  group = config.group_dro.group
  if group not in dataset.task.groups:
    raise ConfigError(
        f"group_dro.group={group!r} is not a group field of data {dataset.name!r}; its group "
        f"fields: {', '.join(dataset.task.groups) or 'none'}")
  num_groups = count_groups(dataset, group)
  # The classifier's model, state, eval and predict (and its checks of the config and data);
  # the optimizer is built again from the same settings for the train step.
  base = classifier.build(config, dataset)
  inputs, target = classifier.fields_of(dataset)
  tx = make_optimizer(config.optimizer, config.num_steps)
  init = lambda key: base.init(key).replace(
      extra={WEIGHTS: jnp.full((num_groups,), 1.0 / num_groups, jnp.float32)})
  return dataclasses.replace(
      base, init=init, train_step=make_train_step(config, tx, inputs, target, group, num_groups),
      headline=base.headline + tuple(f"eval/{name}/worst_group/accuracy"
                                     for name in dataset.task.groups))


def count_groups(dataset, group: str) -> int:
  """G: the number of groups of field `group`, from its largest id in train and test (+1) or
  its named categories, whichever is more; ConfigError for a negative id."""
  ids = [labels_of(split, group) for split in (dataset.train, dataset.test)]
  low = min(int(i.min()) for i in ids if len(i))
  if low < 0:
    raise ConfigError(f"group_dro.group={group!r}: its ids must be >= 0, the data has {low}")
  largest = max(int(i.max()) for i in ids if len(i))
  return max(largest + 1, len(dataset.fields[group].categories))


def group_losses(losses, groups, num_groups: int, weight=None):
  """(mean loss of each group [G], rows of each group [G]) over a batch's valid rows (all,
  or those of non-zero `weight`); a group without rows has mean 0."""
  if weight is None:
    weight = jnp.ones(losses.shape, jnp.float32)
  member = jax.nn.one_hot(groups, num_groups, dtype=jnp.float32) * weight[:, None]  # [B, G]
  counts = jnp.sum(member, axis=0)
  return (member.T @ losses) / jnp.maximum(counts, 1.0), counts


def update_weights(weights, group_loss, step_size: float):
  """One exponentiated-gradient step of the group weights: q * exp(step_size * l), summing
  to 1 (computed in log space, so a large step cannot overflow)."""
  logits = jnp.log(weights) + step_size * jax.lax.stop_gradient(group_loss)
  return jax.nn.softmax(logits)


def robust_loss(weights, group_loss):
  """sum_g q_g * l_g, the gradient flowing through the group losses only."""
  return jnp.sum(jax.lax.stop_gradient(weights) * group_loss)


def make_train_step(config, tx, input_field: str, target: str, group: str, num_groups: int):
  smoothing = float(config.label_smoothing)
  step_size = float(config.group_dro.step_size)

  def train_step(state: TrainState, batch, key):
    inputs = augment.augment(rng.stream(key, "augment"), batch[input_field], config.augment)
    labels, mask = batch[target], batch.get("mask")

    def loss_fn(params):
      # copy=True: BatchNorm statistics are mutated inside grad, at a deeper trace level.
      model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
      logits = model(inputs, train=True)
      group_loss, counts = group_losses(cross_entropy(logits, labels, smoothing),
                                        batch[group], num_groups, mask)
      weights = update_weights(state.extra[WEIGHTS], group_loss, step_size)
      # Over the present groups (losses are >= 0, so an absent group's 0 never wins).
      aux = dict(weights=weights, model_state=split_model(model)[2],
                 accuracy=masked_cross_entropy(logits, labels, mask).accuracy,
                 worst_group_loss=jnp.max(jnp.where(counts > 0, group_loss, 0.0)))
      return robust_loss(weights, group_loss), aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(tx, grads, model_state=aux["model_state"],
                                      extra={**state.extra, WEIGHTS: aux["weights"]})
    return new_state, {"loss": loss, "accuracy": aux["accuracy"],
                       "worst_group_loss": aux["worst_group_loss"],
                       "grad_norm": optax.tree.norm(grads)}

  return train_step
