"""Supervised classification with softmax cross-entropy (optional label smoothing).

The runner's algorithm contract, which every `jaxml/algos/<name>.py` follows:
  validate(config, dataset)              host-side checks, raise ConfigError before compiling
  init_state(config, dataset, key)       -> TrainState (the runner jits it, sharded)
  make_train_step(config, dataset)       -> step(state, batch, key) -> (state, metrics)
  make_eval_step(config, dataset)        -> eval(state, batch) -> {sums..., "count"}
  make_feature_fn(config, dataset)       -> features(state, batch) -> [B, D] (linear probe)
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxml import models
from jaxml.core import rng
from jaxml.core.optim import make_optimizer
from jaxml.core.state import TrainState, image_features, split_model
from jaxml.data import augment
from jaxml.data.base import check_labels
from jaxml.errors import ConfigError
from jaxml.privacy import accounting, dp_sgd, ghost


def num_classes(config, dataset) -> int:
  return int(config.model.get("num_classes", 0) or dataset.num_classes)


def validate(config, dataset) -> None:
  check_labels(dataset, num_classes(config, dataset))
  if _dp_enabled(config):
    _dp_plan(config, dataset)  # raises ConfigError on a bad or unaffordable dp block
    abstract = nnx.eval_shape(lambda: models.create(
        config.model, num_classes=num_classes(config, dataset),
        input_shape=dataset.input_shape, rngs=nnx.Rngs(0)))
    try:
      ghost.check_per_example(abstract)
    except ValueError as err:
      raise ConfigError(f"dp: {err}") from None


def _dp_enabled(config) -> bool:
  return bool(config.get("dp", {}).get("enabled", False))


@functools.lru_cache(maxsize=8)
def _cached_plan(dp_json: str, num_examples: int, batch_size: int, num_steps: int,
                 num_devices: int) -> dp_sgd.DpSgdPlan:
  # Calibration costs a few hundred ms; validate, the sampler, the step and the ε logger
  # all ask for the same plan.
  return dp_sgd.plan(ml_collections.ConfigDict(json.loads(dp_json)), num_examples=num_examples,
                     batch_size=batch_size, num_steps=num_steps, num_devices=num_devices)


def _dp_plan(config, dataset) -> dp_sgd.DpSgdPlan:
  return _cached_plan(config.dp.to_json(), len(dataset.train), config.batch_size,
                      config.num_steps, jax.device_count())


def make_batch_sampler(config, dataset):
  """DP runs sample batches as their accounting assumes (padded Poisson batches)."""
  if not _dp_enabled(config):
    return None, config.batch_size
  dp_plan = _dp_plan(config, dataset)
  return dp_sgd.batch_sampler(dp_plan, len(dataset.train)), dp_plan.batch_size


def make_host_metrics(config, dataset):
  """ε spent so far (dp runs): logged with every train row."""
  if not _dp_enabled(config):
    return None
  tracker = accounting.BudgetTracker(_dp_plan(config, dataset).spec)
  return lambda step: {"dp/epsilon": tracker.epsilon_at(step)}


def init_state(config, dataset, key) -> TrainState:
  model = models.create(config.model, num_classes=num_classes(config, dataset),
                        input_shape=dataset.input_shape, rngs=nnx.Rngs(params=key))
  return TrainState.create(model, make_optimizer(config.optimizer, config.num_steps))


def cross_entropy(logits, labels, classes: int, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, classes), label_smoothing) \
      if label_smoothing else jax.nn.one_hot(labels, classes)
  return optax.softmax_cross_entropy(logits, targets)


def make_train_step(config, dataset):
  if _dp_enabled(config):
    return _make_dp_train_step(config, dataset)
  tx = make_optimizer(config.optimizer, config.num_steps)
  classes = num_classes(config, dataset)
  smoothing = float(config.get("label_smoothing", 0.0))

  def train_step(state: TrainState, batch, key):
    images = augment.augment(rng.stream(key, "augment"), batch["image"], config.augment)

    def loss_fn(params):
      # copy=True: BatchNorm statistics are mutated inside grad, at a deeper trace level.
      model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
      logits = model(images, train=True)
      loss = cross_entropy(logits, batch["label"], classes, smoothing).mean()
      return loss, (logits, split_model(model)[2])

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
               "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=model_state), metrics

  return train_step


def _make_dp_train_step(config, dataset):
  """DP-SGD: clipped per-example gradients, Gaussian noise, then the optimizer."""
  tx = make_optimizer(config.optimizer, config.num_steps)
  classes = num_classes(config, dataset)
  dp_plan = _dp_plan(config, dataset)
  loss = lambda logits, examples: cross_entropy(logits, examples["label"], classes)

  def train_step(state: TrainState, batch, key):
    images = augment.augment(rng.stream(key, "augment"), batch["image"], config.augment)
    private_grad = dp_sgd.private_gradient(dp_plan, loss, state.graphdef)
    grads, losses, valid, info = private_grad(rng.stream(key, "dp_noise"), state.params,
                                              state.model_state, {**batch, "image": images})
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    count = jnp.maximum(jnp.sum(valid), 1)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {
        "loss": jnp.sum(losses) / count, **info}

  return train_step


def make_eval_step(config, dataset):
  classes = num_classes(config, dataset)

  def eval_step(state: TrainState, batch):
    logits = state.model()(batch["image"], train=False)
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"loss": jnp.sum(cross_entropy(logits, batch["label"], classes) * mask),
            "accuracy": jnp.sum(correct * mask), "count": jnp.sum(mask)}

  return eval_step


def make_feature_fn(config, dataset):
  del config, dataset
  return image_features
