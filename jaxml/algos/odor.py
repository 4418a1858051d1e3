"""Multi-label odour prediction from molecular graphs (Sanchez-Lengeling et al. 2019, "Machine
Learning for Scent"; the post "Learning to Smell").

A message-passing network (`jaxml/models/mpnn.py`) reads each molecule's graph of atoms and
bonds and predicts its descriptors (138 for the shipped data) with one sigmoid per descriptor;
its penultimate layer, the "odour embedding", is what `features` returns. The loss is the
sigmoid cross-entropy with per-descriptor class weights (`loss.weighting`,
`jaxml/losses/multilabel.py`), since descriptors are rare to different degrees.

Graphs arrive padded per molecule to the data set's largest (`jaxml/data/base.py`); the
largest odour molecule has 92 atoms where the mean is 12.6, so every step packs the batch's
real atoms and bonds into buffers sized for a typical batch (`model.pack_slack`,
`jaxml/models/graphs.py`) and falls back to the padded layout for a batch that does not fit:
exact for every batch, one compilation, and about the real atoms' cost.

Evaluation: the eval step sums the loss; the ranking metrics (macro and micro AUROC and
AUPRC over descriptors, and each descriptor's in the final row) are computed once over the
whole split from the gathered `predict` probabilities (`jaxml/training/evaluate.py`,
`jaxml/evaluators/ranking.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxml.algos.base import Algorithm
from jaxml.core import checks, rng
from jaxml.core.optim import check_optimizer, make_optimizer
from jaxml.core.state import TrainState
from jaxml.data.base import labels_of
from jaxml.errors import ConfigError
from jaxml.losses import multilabel
from jaxml.models import graphs, mpnn

# The per-example graph layout of jaxml/data/base.py, in the order `graphs.apply` takes it.
GRAPH_FIELDS = ("nodes", "node_mask", "edge_index", "edges", "edge_mask")
RULES = {**mpnn.RULES, "loss.weighting": checks.one_of(*multilabel.WEIGHTINGS),
         "model.pack_slack": checks.in_range(1)}


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`)."""
  checks.check_values(config, RULES)
  check_optimizer(config.optimizer)


def check_data(dataset) -> None:
  """ConfigError unless the data are multi-label graphs in the layout of jaxml/data/base.py."""
  task = dataset.task
  missing = [name for name in GRAPH_FIELDS if name not in task.inputs]
  if task.kind != "multilabel" or missing:
    raise ConfigError(f"data {dataset.name!r} is a {task.kind!r} task with inputs "
                      f"{list(task.inputs)}; odour training needs multi-label molecular graphs "
                      f"with inputs {list(GRAPH_FIELDS)} (e.g. data.source=odor)")


def build(config, dataset) -> Algorithm:
  check_config(config)
  check_data(dataset)
  fields, target = dataset.fields, dataset.task.target
  positive, negative = multilabel.label_weights(labels_of(dataset.train, target),
                                                config.loss.weighting)
  sizes = (*_mean_sizes(dataset.train), fields["nodes"].shape[0], fields["edges"].shape[0])
  pack = lambda batch, groups: graphs.budgets(
      *sizes, batch_size=batch["nodes"].shape[0] // groups,
      slack=float(config.model.pack_slack))

  def make_model(rngs):
    return mpnn.create(config.model, node_features=fields["nodes"].shape[-1],
                       edge_features=fields["edges"].shape[-1],
                       num_labels=dataset.task.num_classes, rngs=rngs)

  tx = make_optimizer(config.optimizer, config.num_steps)
  # One packing group per device of the data axis, so each device packs its own molecules
  # and message passing stays local to it (jaxml/models/graphs.py).
  groups = int(config.num_devices) or jax.device_count()

  def embed(model, batch):
    node_budget, edge_budget = pack(batch, groups)
    return graphs.apply(model.embed, *(batch[name] for name in GRAPH_FIELDS),
                        node_budget=node_budget, edge_budget=edge_budget, groups=groups)

  def logits_of(model, batch, key=None):
    # The head outside `apply`: dropout's key then draws one mask for the whole batch, not
    # one shared by every packing group.
    return model.logits_from(embed(model, batch), train=key is not None, key=key)

  def train_step(state: TrainState, batch, key):
    mask = batch.get("mask", jnp.ones(batch[target].shape[0], jnp.float32))

    def loss_fn(params):
      model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
      logits = logits_of(model, batch, rng.stream(key, "dropout"))
      losses = multilabel.sigmoid_cross_entropy(logits, batch[target], positive, negative)
      return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(tx, grads), {"loss": loss,
                                              "grad_norm": optax.tree.norm(grads)}

  def eval_step(state: TrainState, batch):
    losses = multilabel.sigmoid_cross_entropy(logits_of(state.model(), batch), batch[target],
                                              positive, negative)
    return {"loss": jnp.sum(losses * batch["mask"]), "count": jnp.sum(batch["mask"])}

  def predict(state: TrainState, batch):
    return jax.nn.sigmoid(logits_of(state.model(), batch).astype(jnp.float32))

  def features(state: TrainState, batch):
    return embed(state.model(), batch)

  init = lambda key: TrainState.create(make_model(nnx.Rngs(params=key)), tx)
  return Algorithm(init=init, train_step=train_step, eval_step=eval_step, predict=predict,
                   features=features, target=target,
                   headline=("eval/auroc/macro", "eval/auprc/macro"))


def _mean_sizes(split) -> tuple[float, float]:
  """(mean atoms, mean directed bonds) per molecule of the training split, which size the
  packing budgets (`graphs.budgets`) with the padded maximum."""
  return (float(labels_of(split, "node_mask").sum(axis=-1).mean()),
          float(labels_of(split, "edge_mask").sum(axis=-1).mean()))

