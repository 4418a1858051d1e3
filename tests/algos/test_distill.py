"""Distillation and DeDiER (jaxml/algos/distill.py) against NumPy and the classifier.

One teacher smoke run (the classifier on coloured digits) is trained once for the module and
shared by every test that needs a teacher."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import classifier as classifier_config
from experiments import early_readouts
from jaxml import runner, trained
from jaxml.algos import classifier, distill
from jaxml.core import files
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from tests.algos.smoke import run_compiling_once


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """The workdir of a trained classifier run on coloured digits (smoke size)."""
  config = classifier_config.get_config("spurious=coloured_digits,smoke")
  config.progress = False
  config.linear_probe.enabled = False
  config.num_steps = 30  # one eval and one checkpoint, at the end
  workdir = tmp_path_factory.mktemp("teacher")
  runner.run(config, str(workdir))
  return str(workdir)


@pytest.fixture(scope="module")
def dataset():
  return load_dataset(early_readouts.get_config("method=dedier,smoke").data)


def _config(method, teacher, **distill_block):
  config = early_readouts.get_config(f"method={method},smoke")
  config.progress = False
  config.distill.teacher = teacher
  config.distill.update(distill_block)
  return config


def _batch(dataset, size=64):
  return {k: jnp.asarray(v[:size]) for k, v in dataset.train.arrays.items()}


def _softmax(logits):
  z = np.exp(logits - logits.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def _log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _weights(readout_logits, labels, beta):
  """DeDiER's weights as the paper states them, in NumPy, one example at a time."""
  out = np.ones(len(labels))
  for i, (logits, label) in enumerate(zip(readout_logits, labels)):
    p = _softmax(logits.astype(np.float64))
    if np.argmax(logits) != label:
      out[i] = np.exp(beta * (p.max() - p[label]))
  return out


def _hinton(student, teacher, labels, weights, alpha, temperature, mask):
  """Hinton's loss (weighted per example) and its gradient in the student's logits, NumPy."""
  student, teacher = student.astype(np.float64), teacher.astype(np.float64)
  n = mask.sum()
  ce = -_log_softmax(student)[np.arange(len(labels)), labels]
  log_p, log_q = _log_softmax(teacher / temperature), _log_softmax(student / temperature)
  kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
  loss = alpha * (mask * ce).sum() / n + (1 - alpha) * temperature**2 * (
      mask * weights * kl).sum() / n
  onehot = np.eye(student.shape[1])[labels]
  grad = (alpha * (_softmax(student) - onehot) + (1 - alpha) * temperature * weights[:, None]
          * (np.exp(log_q) - np.exp(log_p))) * mask[:, None] / n
  return loss, grad, (mask * kl).sum() / n


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0, 10.0])
def test_dedier_weights_equal_numpy(beta):
  rng = np.random.default_rng(int(beta * 10))
  logits = rng.normal(size=(256, 10)).astype(np.float32) * 3
  labels = rng.integers(0, 10, 256).astype(np.int32)
  logits[np.arange(64), labels[:64]] = logits[:64].max(-1) + 1.0  # a quarter it gets right
  weights = np.asarray(distill.dedier_weights(jnp.asarray(logits), jnp.asarray(labels), beta))
  expected = _weights(logits, labels, beta)
  np.testing.assert_allclose(weights, expected, rtol=1e-5)
  assert np.all(weights[:64] == 1.0) and (beta == 0) == np.all(weights == 1.0)


@pytest.mark.parametrize("beta, alpha, temperature, masked", [
    (0.0, 0.5, 4.0, False), (0.0, 0.1, 1.0, True), (2.0, 0.5, 4.0, False),
    (5.0, 0.3, 2.0, True)])
def test_distillation_loss_and_gradient_equal_numpy(beta, alpha, temperature, masked):
  """beta 0: Hinton's loss (all weights 1); beta > 0: the same with DeDiER's weights."""
  rng = np.random.default_rng(7)
  student, teacher, readout = (rng.normal(size=(32, 10)).astype(np.float32) * 2
                               for _ in range(3))
  labels = rng.integers(0, 10, 32).astype(np.int32)
  mask = (np.arange(32) < 27).astype(np.float32) if masked else np.ones(32, np.float32)
  weights = distill.dedier_weights(jnp.asarray(readout), jnp.asarray(labels), beta)

  def loss(s):
    return distill.distillation_loss(s, jnp.asarray(teacher), jnp.asarray(labels), weights,
                                     alpha=alpha, temperature=temperature,
                                     mask=jnp.asarray(mask) if masked else None)

  parts = loss(jnp.asarray(student))
  grad = jax.grad(lambda s: loss(s).loss)(jnp.asarray(student))
  expected, expected_grad, kl = _hinton(student, teacher, labels,
                                        _weights(readout, labels, beta), alpha, temperature, mask)
  np.testing.assert_allclose(float(parts.loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(parts.kl), kl, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-4, atol=1e-7)


def test_train_step_is_the_loss_on_the_models_logits_and_leaves_the_teacher(teacher, dataset):
  """The step's metrics equal the NumPy loss on the student's logits and readout and the
  teacher's logits of the same (unaugmented) batch; the teacher's arrays stay bit-identical."""
  config = _config("dedier", teacher, beta=3.0, alpha=0.4)
  config.augment.update(crop_pad=0, noise_std=0.0)
  algorithm = distill.build(config, dataset)
  state = jax.jit(algorithm.init)(jax.random.key(0))
  before = jax.device_get(state.extra["teacher"])
  batch = _batch(dataset)
  x, labels = batch["image"], np.asarray(batch["label"])
  student = state.model()
  logits, readout = (np.asarray(a) for a in student.logits_and_readout(x, train=True))
  teacher_run = trained.load(teacher)
  teacher_logits = np.asarray(teacher_run.state.model()(x, train=False))
  weights = _weights(readout, labels, 3.0)
  loss, _, kl = _hinton(logits, teacher_logits, labels, weights, 0.4, 4.0, np.ones(64))
  readout_ce = -_log_softmax(readout.astype(np.float64))[np.arange(64), labels].mean()

  step = jax.jit(algorithm.train_step)
  new, metrics = step(state, batch, jax.random.key(1))
  np.testing.assert_allclose(float(metrics["loss"]), loss + readout_ce, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["kl"]), kl, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["weight_mean"]), weights.mean(), rtol=1e-5)
  assert float(metrics["upweighted"]) == pytest.approx(np.mean(weights > 1))
  assert float(metrics["readout_accuracy"]) == pytest.approx(
      np.mean(readout.argmax(-1) == labels))
  for _ in range(3):
    new, _ = step(new, batch, jax.random.key(2))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(new.extra["teacher"]), before)
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(
      {"params": teacher_run.state.params, "model_state": teacher_run.state.model_state}))


@pytest.mark.parametrize("method", ["distill", "dedier"])
def test_alpha_one_updates_the_student_as_the_classifier_does(teacher, dataset, method):
  """alpha 1 is pure cross-entropy: the student's update (augmentation included) is the
  classifier's on the same batch and key, except the readout head, which its own loss trains."""
  config = _config(method, teacher, alpha=1.0)
  student = distill.build(config, dataset)
  baseline = classifier.build(config, dataset)  # the same model config, hence the same init
  state = jax.jit(student.init)(jax.random.key(0))
  reference = jax.jit(baseline.init)(jax.random.key(0))
  batch = _batch(dataset)
  step, reference_step = jax.jit(student.train_step), jax.jit(baseline.train_step)
  for i in range(2):
    state, metrics = step(state, batch, jax.random.key(i))
    reference, reference_metrics = reference_step(reference, batch, jax.random.key(i))
  np.testing.assert_allclose(metrics["ce"], reference_metrics["loss"], rtol=1e-6)
  ours, theirs = state.params, reference.params
  if method == "dedier":
    assert "readout_head" in ours
    ours, theirs = ({k: v for k, v in p.items() if k != "readout_head"} for p in (ours, theirs))
  # Bit-identical: with alpha 1 the KL term enters as 0 * (finite), whose gradient is 0.
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  mask = (np.arange(64) < 50).astype(np.float32)  # the eval sums count the valid rows only
  sums = jax.jit(student.eval_step)(state, {**batch, "mask": jnp.asarray(mask)})
  assert set(sums) == {"loss", "accuracy", "count"} | (
      {"readout_accuracy"} if method == "dedier" else set())
  assert float(sums["count"]) == 50
  if method == "dedier":
    readout = np.asarray(state.model().readout(batch["image"], train=False))
    assert float(sums["readout_accuracy"]) == np.sum(
        (readout.argmax(-1) == np.asarray(batch["label"])) * mask)


def test_dedier_smoke_run_through_the_runner(teacher, tmp_path):
  """The early_readouts dedier config trains (steps compile once) and reports accuracy, the
  readout's and the group metrics; the student's checkpoint holds the teacher unchanged."""
  summary = run_compiling_once(_config("dedier", teacher), tmp_path)
  assert summary["completed"] and summary["algo"] == "distill"
  for key in ("eval/accuracy", "eval/readout_accuracy", "eval/group/worst_group/accuracy",
              "eval/aligned/worst_group/accuracy", "eval/aligned/misaligned/accuracy"):
    assert 0 <= summary[key] <= 1, key
  rows = [row for row in files.read_jsonl(tmp_path / "metrics.jsonl")
          if "train/loss" in row]
  assert rows and all(row["train/weight_mean"] >= 1 for row in rows)
  assert {"train/kl", "train/upweighted", "train/readout_accuracy"} <= set(rows[-1])
  student, teacher_run = trained.load(str(tmp_path)), trained.load(teacher)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(student.state.extra["teacher"]),
               jax.device_get({"params": teacher_run.state.params,
                               "model_state": teacher_run.state.model_state}))


@pytest.mark.parametrize("overrides, message", [
    ({"distill.teacher": ""}, r"distill.teacher='': a student needs its teacher: the workdir"),
    ({"distill.teacher": "EMPTY_DIR"}, r"distill.teacher=.*no config.json there, so not a jaxml"),
    ({"distill.beta": 2.0, "model.readout.depth": 0},
     r"distill.beta=2.0 .* model.readout.depth=0"),
    ({"distill.alpha": 1.5}, r"distill.alpha=1.5 must be in \[0, 1\]"),
    ({"distill.temperature": 0.0}, r"distill.temperature=0.0 must be > 0"),
    ({"dp.enabled": True}, r"dp.enabled=True: distill has no DP-SGD training"),
])
def test_check_config_refuses(overrides, message, tmp_path):
  config = _config("dedier", "/no/such/teacher")  # the other checks come before the file's
  config.update_from_flattened_dict(
      {k: str(tmp_path) if v == "EMPTY_DIR" else v for k, v in overrides.items()})
  with pytest.raises(ConfigError, match=message):
    distill.check_config(config)


def test_build_refuses_a_teacher_of_other_data(teacher):
  """A teacher of coloured digits cannot teach slab's vectors, nor 2 of the 10 classes."""
  slab = _config("distill", teacher)
  slab.data = early_readouts.get_config("method=distill,data=slab,smoke").data
  slab.model = early_readouts.get_config("method=distill,data=slab,smoke").model
  slab.augment.update(crop_pad=0, noise_std=0.0)
  with pytest.raises(ConfigError, match=r"distill.teacher=.* does not fit a classifier of this "
                     r"data \('slab': inputs of shape \[10\], 2 classes\)"):
    distill.build(slab, load_dataset(slab.data))
  two = _config("distill", teacher)
  two.data.classes = (3, 5)
  with pytest.raises(ConfigError, match=r"distill.teacher=.* does not fit a classifier of this "
                     r"data \('coloured_digits': inputs of shape \[8, 8, 3\], 2 classes\)"):
    distill.build(two, load_dataset(two.data))
