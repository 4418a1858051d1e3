"""Supervised contrastive pre-training (SupCon, Khosla et al. 2020) and SimCLR.

Stage 1 trains an encoder plus a projection head so that L2-normalised projections of the
same class (SupCon) or of the same image (SimCLR, `supcon.method="simclr"`) are pulled
together across `supcon.num_views` augmented views. The loss is computed with
`jax.shard_map`: every device contrasts its local anchors against the embeddings of the
whole global batch, all-gathered over `data`. Stage 2 is the runner's linear probe on the
frozen pre-projection features (`make_feature_fn`). The cross-entropy baseline on the same
encoder is the `classifier` algorithm (see experiments/supcon.py:ce).

The algorithm contract is `jaxml/algos/base.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxml import models
from jaxml.algos.base import Algorithm
from jaxml.algos.classifier import MODEL_RULES, fields_of, make_features
from jaxml.core import checks, rng
from jaxml.core.optim import check_optimizer, make_optimizer
from jaxml.core.state import TrainState, split_model
from jaxml.data import augment
from jaxml.data.base import check_labels
from jaxml.errors import ConfigError
from jaxml.losses.supcon import supcon_loss_on_mesh

METHODS = ("supcon", "simclr")
# What jaxml/losses/supcon.py accepts (tests/test_bad_configs.py holds the two equal).
CONTRAST_MODES = ("all", "one")
FORMS = ("out", "in")
RULES = {
    **MODEL_RULES, **augment.RULES,
    "supcon.method": checks.one_of(*METHODS), "supcon.num_views": checks.count(1),
    # A temperature of 0 divides by zero: NaN at the first step.
    "supcon.temperature": checks.positive, "supcon.base_temperature": checks.positive,
    "supcon.contrast_mode": checks.one_of(*CONTRAST_MODES),
    "supcon.form": checks.one_of(*FORMS), "supcon.projection_dim": checks.count(1),
    "supcon.projection_hidden": checks.count(0)}  # 0: the encoder's feature width


class SupConNet(nnx.Module):
  """An encoder from jaxml.models plus an MLP projection head onto the unit sphere."""

  def __init__(self, encoder: nnx.Module, hidden: int, out: int, *, rngs: nnx.Rngs):
    self.encoder = encoder
    self.proj_hidden = nnx.Linear(encoder.feature_dim, hidden, rngs=rngs)
    self.proj_out = nnx.Linear(hidden, out, rngs=rngs)

  def features(self, x, *, train: bool = False):
    return self.encoder.features(x, train=train)

  def __call__(self, x, *, train: bool = False):
    z = self.proj_out(jax.nn.relu(self.proj_hidden(self.features(x, train=train))))
    return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`)."""
  checks.check_values(config, RULES)
  if config.supcon.num_views == 1 and config.supcon.method == "simclr":
    raise ConfigError("supcon.num_views=1: SimCLR needs >= 2 views (its positives are the "
                      "other views of the same image)")
  check_optimizer(config.optimizer)


def build(config, dataset) -> Algorithm:
  check_config(config)
  inputs, target = fields_of(dataset)  # views of the input; the target defines positives
  augment.check(config.augment, dataset.fields[inputs].shape)
  check_labels(dataset, dataset.num_classes)
  tx = make_optimizer(config.optimizer, config.num_steps)
  return Algorithm(init=lambda key: init_state(config, dataset, tx, key),
                   train_step=make_train_step(config, tx, inputs, target),
                   eval_step=make_eval_step(config, inputs, target),
                   features=make_features(inputs), target=target,
                   headline=("probe/test_accuracy",))


def _labels(config, batch, target: str):
  return batch[target] if config.supcon.method == "supcon" else None


def _loss_kwargs(config) -> dict:
  c = config.supcon
  return {"temperature": float(c.temperature), "base_temperature": float(c.base_temperature),
          "contrast_mode": c.contrast_mode, "form": c.form}


def init_state(config, dataset, tx, key) -> TrainState:
  rngs = nnx.Rngs(params=key)
  encoder = models.create(config.model, num_classes=dataset.num_classes,
                          input_shape=dataset.fields[dataset.task.inputs[0]].shape, rngs=rngs)
  hidden = int(config.supcon.get("projection_hidden", 0)) or encoder.feature_dim
  net = SupConNet(encoder, hidden, int(config.supcon.projection_dim), rngs=rngs)
  return TrainState.create(net, tx)


def _project_views(graphdef, params, model_state, views, train: bool):
  """Projections [B, V, D] of views [B, V, H, W, C]; all views share one forward pass."""
  net = nnx.merge(graphdef, params, model_state, copy=True)
  b, v = views.shape[:2]
  z = net(views.reshape((b * v,) + views.shape[2:]), train=train)
  return z.reshape(b, v, -1), split_model(net)[2]


def make_train_step(config, tx, input_field: str, target: str):
  num_views = int(config.supcon.num_views)
  kwargs = _loss_kwargs(config)

  def train_step(state: TrainState, batch, key):
    views = augment.views(rng.stream(key, "augment"), batch[input_field], config.augment,
                          num_views)
    labels = _labels(config, batch, target)

    def loss_fn(params):
      z, model_state = _project_views(state.graphdef, params, state.model_state, views, True)
      return supcon_loss_on_mesh(z, labels, **kwargs), model_state

    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(tx, grads, model_state=model_state), {
        "loss": loss, "grad_norm": optax.tree.norm(grads)}

  return train_step


def make_eval_step(config, input_field: str, target: str):
  """Contrastive loss on test batches with fixed augmentations (padding rows excluded)."""
  num_views = int(config.supcon.num_views)
  kwargs = _loss_kwargs(config)

  def eval_step(state: TrainState, batch):
    views = augment.views(jax.random.key(0), batch[input_field], config.augment, num_views)
    z, _ = _project_views(state.graphdef, state.params, state.model_state, views, False)
    valid = batch["mask"] > 0
    loss = supcon_loss_on_mesh(z, _labels(config, batch, target), valid=valid, **kwargs)
    count = jnp.sum(batch["mask"])
    return {"loss": loss * count, "count": count}

  return eval_step

