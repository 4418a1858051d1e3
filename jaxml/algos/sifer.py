"""SiFeR, the feature sieve (Tiwari & Shenoy, ICML 2023): forget what an early readout finds.

A readout head on an early trunk layer (`model.readout`, jaxml/models/readout.py) learns to
classify from the features found there, and the simple, often spurious ones (a colour, a
linear coordinate) are found early. Every `sifer.forget_every` steps, a forget step then
trains the layers below the readout to make its prediction uniform, so that what it could
read there is erased and the layers above must rely on features that survive the sieve.

One train step (one jitted function; the algorithm contract is `jaxml/algos/base.py`):
  1. one trunk pass, `model.logits_and_readout(x, train=True)` on the classifier's
     augmented inputs; loss CE(logits) + CE(readout logits), the readout detached from the
     trunk, so its loss trains the readout head alone; applied with the main optimizer
     (`config.optimizer`, as the classifier), which thus also trains the readout head (the
     paper's code gives the auxiliary head an optimizer of its own);
  2. if `forget_every` > 0 and the step just taken is a multiple of it, the forget step
     (inside the same jitted step, under `jax.lax.cond`): the cross-entropy of the un-detached
     readout, `model.readout(x, train=True, stop_gradient=False)`, to the uniform distribution,
     applied with plain SGD at `sifer.learning_rate` through `only_below(..., trunk_below(..))`:
     only the stem and trunk layers up to the readout's depth change, every other parameter
     (the layers above, the head, the readout head) stays bit-identical. Its optimizer state
     lives in `TrainState.extra["forget"]` (empty for plain SGD, kept so another optimizer
     could take its place). `forget_every` 0 never forgets: the classifier with a readout
     beside it, whose loss never reaches the trunk (the "no forgetting" point of a search);
     its trunk and head train bit for bit as the classifier's, except under
     `optimizer.clip_global_norm` > 0, whose norm then includes the readout head's gradient.

BatchNorm: the forget step normalises with the batch's own statistics (train mode, as the
paper's PyTorch code, which runs the network in train mode throughout) but discards its
running-statistic updates, so the statistics evaluation uses move once per step, with the
train step's pass, however often the run forgets.

Metrics: `loss`, `accuracy` (the main head's, as the classifier's, so runs compare with ERM),
`readout_loss`, `readout_accuracy`, `forget_loss` (the forget step's loss before its update;
0 on steps that do not forget, so its mean over a logging interval divided by `forgot`'s is
the mean over the forget steps), `forgot` (1 or 0; its mean over an interval is the share of
steps that forgot) and `grad_norm` (of step 1's gradient). Evaluation adds the
readout's accuracy, `eval/readout_accuracy`, to the classifier's sums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxml import models
from jaxml.algos import classifier
from jaxml.algos.base import Algorithm
from jaxml.core import checks, rng
from jaxml.core.optim import make_optimizer
from jaxml.core.state import TrainState, split_model
from jaxml.data import augment
from jaxml.data.base import check_labels
from jaxml.errors import ConfigError
from jaxml.losses.classification import masked_cross_entropy
from jaxml.models import readout

RULES = {**classifier.RULES,
         "sifer.forget_every": checks.count(0),  # 0: never forget
         "sifer.learning_rate": checks.positive}
REQUIRED = ("sifer.forget_every", "sifer.learning_rate")


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`)."""
  missing = [key for key in REQUIRED if checks.lookup(config, key) is None]
  if missing:
    raise ConfigError(f"sifer needs {', '.join(missing)}: start from "
                      "experiments/early_readouts.py:method=sifer")
  classifier.check_extension(config, "sifer", RULES)
  depth = checks.lookup(config, "model.readout.depth", 0)
  if checks.count(1)(depth):  # absent or 0: the model would have no readout
    raise ConfigError(f"model.readout.depth={depth!r} must be an integer >= 1: sifer forgets "
                      "through an early readout")


def build(config, dataset) -> Algorithm:
  """SiFeR on a classification data set: the classifier's model with its early readout."""
  check_config(config)
  inputs, target = classifier.fields_of(dataset)
  augment.check(config.augment, dataset.fields[inputs].shape)
  classes = classifier.num_classes(config, dataset)
  check_labels(dataset, classes)
  make_model = lambda rngs: models.create(config.model, num_classes=classes,
                                          input_shape=dataset.fields[inputs].shape, rngs=rngs)
  # Built abstractly now, so a readout deeper than the network is refused before compiling.
  forget_tx = forget_optimizer(config, nnx.eval_shape(lambda: make_model(nnx.Rngs(0))))
  tx = make_optimizer(config.optimizer, config.num_steps)

  def init(key):
    state = TrainState.create(make_model(nnx.Rngs(params=key)), tx)  # as the classifier's
    return state.replace(extra={"forget": forget_tx.init(state.params)})

  return Algorithm(
      init=init, train_step=make_train_step(config, tx, forget_tx, inputs, target),
      eval_step=make_eval_step(inputs, target), features=classifier.make_features(inputs),
      predict=classifier.make_predict(inputs), target=target, headline=("eval/accuracy",))


def forget_optimizer(config, model) -> optax.GradientTransformation:
  """SGD at `sifer.learning_rate` on the stem and trunk layers up to the readout of `model`
  (abstract or not); updates of exactly zero everywhere else."""
  return readout.only_below(optax.sgd(float(config.sifer.learning_rate)),
                            readout.trunk_below(model))


def uniform_cross_entropy(logits: jax.Array) -> jax.Array:
  """Mean over the batch of the cross-entropy to the uniform distribution over classes,
  -mean_c log_softmax(logits)_c: log(num_classes) at its minimum, a uniform prediction."""
  return -jnp.mean(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))


def forget_step(forget_tx, state: TrainState, inputs: jax.Array):
  """(state with the layers below the readout moved towards a uniform readout, the forget
  loss before the move). BatchNorm runs in train mode; its statistics are left as they were."""

  def loss_fn(params):
    model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
    return uniform_cross_entropy(model.readout(inputs, train=True, stop_gradient=False))

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, forget_state = forget_tx.update(grads, state.extra["forget"], state.params)
  return state.replace(params=optax.apply_updates(state.params, updates),
                       extra={**state.extra, "forget": forget_state}), loss


def make_train_step(config, tx, forget_tx, input_field: str, target: str):
  smoothing = float(config.label_smoothing)
  forget_every = int(config.sifer.forget_every)

  def train_step(state: TrainState, batch, key):
    inputs = augment.augment(rng.stream(key, "augment"), batch[input_field], config.augment)

    def loss_fn(params):
      # copy=True: BatchNorm statistics are mutated inside grad, at a deeper trace level.
      model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
      logits, readout_logits = model.logits_and_readout(inputs, train=True)
      ce = masked_cross_entropy(logits, batch[target], label_smoothing=smoothing)
      readout_ce = masked_cross_entropy(readout_logits, batch[target])
      return ce.mean + readout_ce.mean, (ce, readout_ce, split_model(model)[2])

    (_, (ce, readout_ce, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(tx, grads, model_state=model_state)
    forget_loss, forgot = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.bool_)
    if forget_every:  # state.step is now the number of steps taken, this one included
      forgot = state.step % forget_every == 0
      state, forget_loss = jax.lax.cond(
          forgot, lambda s: forget_step(forget_tx, s, inputs), lambda s: (s, forget_loss),
          state)
    return state, {
        "loss": ce.mean, "accuracy": ce.accuracy, "readout_loss": readout_ce.mean,
        "readout_accuracy": readout_ce.accuracy, "forget_loss": forget_loss,
        "forgot": forgot.astype(jnp.float32), "grad_norm": optax.tree.norm(grads)}

  return train_step


def make_eval_step(input_field: str, target: str):
  """The classifier's sums, plus the number of valid rows the readout gets right."""
  classify = classifier.make_eval_step(input_field, target)

  def eval_step(state: TrainState, batch):
    # A second pass of the trunk's first layers (eval mode, so nothing is updated twice):
    # the price of reusing the classifier's step rather than copying it.
    readout_logits = state.model().readout(batch[input_field], train=False)
    correct = masked_cross_entropy(readout_logits, batch[target], batch["mask"]).correct
    return {**classify(state, batch), "readout_accuracy": correct}

  return eval_step
