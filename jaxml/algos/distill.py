"""Knowledge distillation (Hinton et al. 2015) and DeDiER (Tiwari et al., WACV 2024): a student
classifier trained on the labels and on a trained teacher's softened predictions, each
example's distillation term weighted up where the student's early readout is confidently wrong.

    loss = alpha * CE(student, label)
         + (1 - alpha) * T^2 * mean_i(w_i * KL(softmax(teacher_i / T) || softmax(student_i / T)))
         + CE(readout, label)                      (only when the student has a readout)

    w_i = exp(beta * margin_i) where the readout's argmax is not label_i, else 1;
    margin_i = max_c p_readout(c | x_i) - p_readout(label_i | x_i) (softmax at temperature 1).

The weights are constants of the loss (stop_gradient): they say where the student should
listen to the teacher harder, not something to optimise. An early readout
(`jaxml/models/readout.py`) errs, confidently, on the examples that a shallow (often spurious)
feature gets wrong, so DeDiER moves the student's attention to the teacher on those. The
readout is trained by its own cross-entropy, detached from the trunk (`logits_and_readout`:
one pass, the readout's loss reaches its head alone). `distill.beta` 0 is Hinton's
distillation (all weights 1); a student without a readout (`model.readout.depth` 0) has
weights 1 and no readout loss, and then beta must be 0.

Config block `distill`: `teacher`, the workdir of a trained classifier run on the same data
(opened with `classifier.restore`; same input shape and number of classes); `alpha` in [0, 1];
`temperature` T > 0; `beta` >= 0. The rest is the classifier's (model, augment,
label_smoothing on the CE term, optimizer); DP-SGD is not offered.

The teacher runs in eval mode on the same augmented inputs as the student. Its variables
(params and model_state, e.g. BatchNorm statistics) live in `TrainState.extra["teacher"]`:
never updated, but checkpointed with the run, so a resumed run distils from exactly the same
teacher even if the teacher's workdir has moved on. They enter the jitted `init` as constants
(closed over, copied to the host once): fine for the small teachers here; a large teacher
would want them passed to `init` as an argument instead, so the program does not embed them.
Train metrics: loss, ce (the student's cross-entropy), kl (the mean KL, unweighted: how far
the student is from the teacher), weight_mean, upweighted (the share of examples with
w_i > 1), accuracy, readout_accuracy (with a readout) and grad_norm. Eval: the classifier's
sums, plus readout_accuracy. The algorithm contract is `jaxml/algos/base.py`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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
from jaxml.losses.classification import MaskedCrossEntropy, masked_cross_entropy

RULES = {
    **classifier.RULES,
    "distill.alpha": checks.fraction,  # 1: labels only (the classifier); 0: teacher only
    "distill.temperature": checks.positive, "distill.beta": checks.non_negative}
NEEDS_TEACHER = "a student needs its teacher: the workdir of a trained classifier run"


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`)."""
  classifier.check_extension(config, "distill", RULES)
  teacher = config.distill.teacher
  if not isinstance(teacher, str) or not teacher:
    raise ConfigError(f"distill.teacher={teacher!r}: {NEEDS_TEACHER}")
  beta = config.distill.beta
  if beta > 0 and not readout_depth(config):
    raise ConfigError(f"distill.beta={beta} weights examples by the student's early readout, "
                      "but model.readout.depth=0 (no readout): set model.readout.depth >= 1, "
                      "or distill.beta=0 for Hinton distillation")
  classifier.trained_config(teacher, "distill.teacher")  # a classifier run, before the data


def readout_depth(config) -> int:
  return int(checks.lookup(config, "model.readout.depth", 0) or 0)


def build(config, dataset) -> Algorithm:
  """A student classifier of the data's task, distilled from `config.distill.teacher`."""
  check_config(config)
  inputs, target = classifier.fields_of(dataset)
  input_shape = tuple(dataset.fields[inputs].shape)
  augment.check(config.augment, input_shape)
  classes = classifier.num_classes(config, dataset)
  check_labels(dataset, classes)
  teacher = load_teacher(config.distill.teacher, dataset)
  make_model = lambda rngs: models.create(config.model, num_classes=classes,
                                          input_shape=input_shape, rngs=rngs)
  tx = make_optimizer(config.optimizer, config.num_steps)
  has_readout = readout_depth(config) > 0

  def init(key):
    state = TrainState.create(make_model(nnx.Rngs(params=key)), tx)
    return state.replace(extra={"teacher": jax.tree.map(jnp.asarray, teacher.variables)})

  return Algorithm(
      init=init, train_step=make_train_step(config, tx, teacher, inputs, target, has_readout),
      eval_step=make_eval_step(inputs, target, has_readout),
      features=classifier.make_features(inputs), predict=classifier.make_predict(inputs),
      target=target, headline=("eval/accuracy",))


class Teacher(NamedTuple):
  """A trained model: its graphdef (static) and its variables {params, model_state} (host
  arrays, which `init` puts into the state)."""

  graphdef: Any
  variables: dict[str, Any]

  def logits(self, variables, inputs: jax.Array) -> jax.Array:
    """Eval-mode logits of `inputs` under `variables` (the state's copy), gradient stopped."""
    model = nnx.merge(self.graphdef, variables["params"], variables["model_state"])
    return jax.lax.stop_gradient(model(inputs, train=False))


def load_teacher(workdir: str, dataset) -> Teacher:
  """The teacher run in `workdir` at its newest checkpoint (`classifier.restore`: a classifier
  run of one model whose model fits this data's inputs and classes; ConfigError naming
  `distill.teacher` otherwise)."""
  _, _, state = classifier.restore(workdir, dataset, "distill.teacher")
  return Teacher(state.graphdef, jax.device_get(
      {"params": state.params, "model_state": state.model_state}))


def dedier_weights(readout_logits: jax.Array, labels: jax.Array, beta: float) -> jax.Array:
  """DeDiER's per-example weights [B] (constants: gradient stopped): exp(beta * margin) where
  the readout's argmax is not the label, margin = its top probability minus the label's
  (softmax at temperature 1); 1 where the readout is right. beta 0 gives all ones."""
  readout_logits = readout_logits.astype(jnp.float32)
  probabilities = jax.nn.softmax(readout_logits, axis=-1)
  of_label = jnp.take_along_axis(probabilities, labels[:, None].astype(jnp.int32), -1)[:, 0]
  margin = jnp.max(probabilities, axis=-1) - of_label
  wrong = jnp.argmax(readout_logits, axis=-1) != labels
  return jax.lax.stop_gradient(jnp.where(wrong, jnp.exp(beta * margin), 1.0))


def per_example_kl(teacher_logits: jax.Array, student_logits: jax.Array,
                   temperature: float) -> jax.Array:
  """KL(softmax(teacher / T) || softmax(student / T)) per example [B]."""
  log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


class DistillationLoss(NamedTuple):
  loss: jax.Array  # alpha * ce + (1 - alpha) * T^2 * weighted_kl
  ce: MaskedCrossEntropy  # the student's cross-entropy against the labels
  kl: jax.Array  # mean per-example KL, unweighted: how far the student is from the teacher
  weighted_kl: jax.Array  # mean of w_i * KL_i


def distillation_loss(student_logits, teacher_logits, labels, weights, *, alpha: float,
                      temperature: float, mask=None,
                      label_smoothing: float = 0.0) -> DistillationLoss:
  """The student's loss on a batch (means over the rows where `mask` is non-zero), from its
  logits [B, C], the teacher's [B, C], integer labels [B] and per-example weights [B]."""
  ce = masked_cross_entropy(student_logits, labels, mask, label_smoothing=label_smoothing)
  valid = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
  kl = per_example_kl(teacher_logits, student_logits, temperature)
  mean = lambda x: jnp.sum(x * valid) / jnp.maximum(jnp.sum(valid), 1.0)
  weighted_kl = mean(weights * kl)
  loss = alpha * ce.mean + (1.0 - alpha) * temperature**2 * weighted_kl
  return DistillationLoss(loss, ce, mean(kl), weighted_kl)


def make_train_step(config, tx, teacher: Teacher, input_field: str, target: str,
                    has_readout: bool):
  alpha, beta = float(config.distill.alpha), float(config.distill.beta)
  temperature, smoothing = float(config.distill.temperature), float(config.label_smoothing)

  def train_step(state: TrainState, batch, key):
    inputs = augment.augment(rng.stream(key, "augment"), batch[input_field], config.augment)
    labels, mask = batch[target], batch.get("mask")
    teacher_logits = teacher.logits(state.extra["teacher"], inputs)

    def loss_fn(params):
      # copy=True: BatchNorm statistics are mutated inside grad, at a deeper trace level.
      model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
      if has_readout:  # one trunk pass; the readout's input is detached from the trunk
        logits, readout_logits = model.logits_and_readout(inputs, train=True)
        weights = dedier_weights(readout_logits, labels, beta)
        readout_ce = masked_cross_entropy(readout_logits, labels, mask)
      else:
        logits, weights, readout_ce = model(inputs, train=True), jnp.ones(labels.shape), None
      parts = distillation_loss(logits, teacher_logits, labels, weights, alpha=alpha,
                                temperature=temperature, mask=mask, label_smoothing=smoothing)
      loss = parts.loss if readout_ce is None else parts.loss + readout_ce.mean
      return loss, (parts, readout_ce, weights, split_model(model)[2])

    (loss, (parts, readout_ce, weights, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    valid = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    mean = lambda x: jnp.sum(x * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    metrics = {"loss": loss, "ce": parts.ce.mean, "kl": parts.kl,
               "weight_mean": mean(weights), "upweighted": mean(weights > 1.0),
               "accuracy": parts.ce.accuracy, "grad_norm": optax.tree.norm(grads)}
    if readout_ce is not None:
      metrics["readout_accuracy"] = readout_ce.accuracy
    return state.apply_gradients(tx, grads, model_state=model_state), metrics

  return train_step


def make_eval_step(input_field: str, target: str, has_readout: bool):
  """The classifier's sums, plus the readout's correct count when the model has one (its
  forward pass stops at the readout's layer)."""
  sums_of = classifier.make_eval_step(input_field, target)
  if not has_readout:
    return sums_of

  def eval_step(state: TrainState, batch):
    readout_logits = state.model().readout(batch[input_field], train=False)
    right = jnp.argmax(readout_logits, axis=-1) == batch[target]
    return {**sums_of(state, batch),
            "readout_accuracy": jnp.sum(right * batch["mask"].astype(jnp.float32))}

  return eval_step
