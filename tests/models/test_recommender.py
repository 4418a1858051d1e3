"""The recommender model: shapes, options that take effect, and learning the click log."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import classifier as classifier_config
from jaxml import models
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from tests.algos.smoke import run_compiling_once

IDS = jnp.asarray(np.random.default_rng(0).integers(0, 30, (6, 5)), jnp.int32)


def build(**fields):
  config = ml_collections.ConfigDict(
      {"name": "recommender", "vocab": 30, "embed_dim": 4, "hidden": (16, 8), **fields})
  return models.create(config, num_classes=2, input_shape=(5,), rngs=nnx.Rngs(0))


def test_shapes_and_the_shared_interface():
  model = build()
  assert "recommender" in models.available()
  assert model(IDS).shape == (6, 2)
  features = model.features(IDS)
  assert features.shape == (6, model.feature_dim) == (6, 8)
  np.testing.assert_allclose(model(IDS), model.head(features), rtol=1e-6)
  assert model.embed.embedding.shape == (5 * 30, 4)  # one table, offsets per field


def test_fields_do_not_share_embedding_rows():
  """The same id in two fields reads two different rows."""
  model = build(hidden=())
  same = jnp.zeros((1, 5), jnp.int32)
  rows = model.features(same).reshape(5, 4)
  assert len({tuple(np.round(np.asarray(r), 6)) for r in rows}) == 5


def test_activation_and_layer_norm_take_effect():
  relu, smelu = build(), build(activation="smelu:2.0")
  assert nnx.graphdef(relu) != nnx.graphdef(smelu)
  assert not np.allclose(relu(IDS), smelu(IDS))  # same init (same rngs), other function
  normed = build(layer_norm=True)
  assert len(normed.norms) == 2 and len(relu.norms) == 0
  assert not np.allclose(relu(IDS), normed(IDS))
  # Layer norm sees the pre-activations: zero mean, unit variance per example.
  first = normed.norms[0](normed.layers[0](normed.embed(IDS + jnp.arange(5) * 30).reshape(6, -1)))
  np.testing.assert_allclose(first.mean(-1), 0, atol=1e-5)


def test_dot_interaction_appends_the_pairwise_dot_products_to_the_mlp_input():
  """Against a NumPy reference on the model's own weights: [e_0, .., e_4, e_f . e_g (f < g)]."""
  model = build(interaction="dot", hidden=(16,))
  assert model.layers[0].kernel.shape == (5 * 4 + 10, 16)
  table = np.asarray(model.embed.embedding[...])
  rows = table[np.asarray(IDS) + np.arange(5) * 30]  # [6, 5, 4]
  dots = np.stack([np.sum(rows[:, f] * rows[:, g], axis=1)
                   for f in range(5) for g in range(f + 1, 5)], axis=1)
  inputs = np.concatenate([rows.reshape(6, -1), dots], axis=1)
  kernel, bias = np.asarray(model.layers[0].kernel[...]), np.asarray(model.layers[0].bias[...])
  expected = np.maximum(inputs @ kernel + bias, 0)
  np.testing.assert_allclose(model.features(IDS), expected, rtol=1e-5, atol=1e-5)


def test_no_interaction_is_the_default_and_keeps_the_plain_mlp_input():
  assert build().layers[0].kernel.shape == (5 * 4, 16)
  assert build(interaction="none").layers[0].kernel.shape == (5 * 4, 16)


def test_grad_is_finite_through_the_functional_pattern():
  graphdef, params = nnx.split(build(layer_norm=True, interaction="dot",
                                     activation="gsmelu:alpha=1,beta=2,left=0.1,right=1"))
  loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(IDS) ** 2)
  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("fields, input_shape, message", [
    ({"vocab": 0}, (5,), "model.vocab must be positive"),
    ({"embed_dim": 2.5}, (5,), "model.embed_dim must be positive"),
    ({"hidden": (8, 0)}, (5,), "model.hidden must be positive"),
    ({"layer_norm": "yes"}, (5,), "model.layer_norm must be True or False"),
    ({"interaction": "fm"}, (5,), "model.interaction must be one of none, dot"),
    ({"activation": "smelu:0"}, (5,), "beta must be > 0"),
    ({}, (5, 2), r"ids of shape \[F\]"),
])
def test_bad_config_raises_config_error(fields, input_shape, message):
  config = ml_collections.ConfigDict({"name": "recommender", "vocab": 30, **fields})
  with pytest.raises(ConfigError, match=message):
    models.create(config, num_classes=2, input_shape=input_shape, rngs=nnx.Rngs(0))


def _log_loss(p, y):
  p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_smoke_run_beats_the_base_rate_and_reports_the_bayes_gap(tmp_path):
  config = classifier_config.get_config("clicklog,smoke")
  config.progress = False
  config.linear_probe.enabled = False  # not what this test checks; saves seconds
  summary = run_compiling_once(config, tmp_path)
  dataset = load_dataset(config.data)
  clicks, p_click = dataset.test.arrays["click"], dataset.test.arrays["p_click"]
  base_rate = dataset.train.arrays["click"].mean()
  constant = _log_loss(np.full(len(clicks), base_rate), clicks)
  bayes = _log_loss(p_click, clicks)
  model = summary["eval/loss"]  # mean softmax cross-entropy over 2 classes: the log loss
  print(f"test log loss: model {model:.4f}, constant {constant:.4f}, Bayes {bayes:.4f}")
  assert bayes < model < constant - 0.01


def test_clicklog_variant_refuses_a_model_that_cannot_embed_ids():
  from experiments import classifier as classifier_config  # pylint: disable=import-outside-toplevel
  from jaxml.errors import ConfigError  # pylint: disable=import-outside-toplevel
  with pytest.raises(ConfigError, match="does not combine with clicklog"):
    classifier_config.get_config("clicklog,model=mlp")
