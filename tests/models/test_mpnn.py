"""The MPNN: invariances (atom order, padding graphs, batching, packing), a looped NumPy
reference of a step, gradients reaching every parameter, dropout, and config errors."""

import itertools

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxml import models
from jaxml.errors import ConfigError
from jaxml.models import graphs, mpnn
from tests.models import molecules

NODE_FEATURES, EDGE_FEATURES, LABELS = 3, 2, 4
SIZES = (3, 7, 1, 5, 9)
MAX_NODES, MAX_EDGES = 10, 24


def build(**settings):
  """A small MPNN with random, not zero, biases: a zero-initialised network maps zeros to
  zeros, which would hide a padding node or edge left unmasked."""
  settings = {"hidden": 8, "embedding": 6, "steps": 2, "set2set_steps": 2, **settings}
  model = mpnn.MPNN(NODE_FEATURES, EDGE_FEATURES, LABELS, **settings,
                    rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  biases = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param) and v[...].ndim == 1]
  for seed, variable in enumerate(biases):
    variable[...] = jax.random.normal(jax.random.key(seed), variable[...].shape) * 0.3
  return model


def sample(seed=0, sizes=SIZES):
  return molecules.batch(np.random.default_rng(seed), sizes, max_nodes=MAX_NODES,
                         max_edges=MAX_EDGES, node_features=NODE_FEATURES,
                         edge_features=EDGE_FEATURES)


def jitted(model, fn=lambda m, flat: m(flat), to_graphs=graphs.flatten):
  """`fn(model, to_graphs(batch))`, compiled once per batch shape."""
  graphdef, state = nnx.split(model)
  compiled = jax.jit(lambda state, *f: fn(nnx.merge(graphdef, state), to_graphs(*f)))
  return lambda g: compiled(state, *molecules.fields(g))


@pytest.mark.parametrize("update, readout",
                         list(itertools.product(mpnn.UPDATES, mpnn.READOUTS)))
def test_every_option_is_invariant_to_the_order_of_atoms_and_bonds(update, readout):
  model = build(update=update, readout=readout)
  logits = jitted(model)
  g = sample()
  out = logits(g)
  assert out.shape == (len(SIZES), LABELS) and np.all(np.isfinite(out))
  for seed in (1, 2):
    permuted = molecules.permute_atoms(np.random.default_rng(seed), g)
    np.testing.assert_allclose(logits(permuted), out, rtol=1e-5, atol=1e-5)


def test_padding_nodes_stay_exactly_zero():
  model = build(update="residual")
  g = sample()
  states = jax.jit(model.node_states)(graphs.flatten(*molecules.fields(g)))
  padding = g["node_mask"].reshape(-1) == 0
  assert np.all(states[padding] == 0) and np.any(states[~padding] != 0)


def test_padding_graphs_leave_the_real_molecules_unchanged():
  model = build()  # set2set: the readout with a softmax per molecule
  g = sample(3)
  slots = [1, 1, 4]  # where the all-padding molecules go
  junk = sample(4, sizes=(0, 0, 0))  # masks all zero, random features
  padded = {k: np.insert(v, slots, junk[k], axis=0) for k, v in g.items()}
  real = np.insert(np.ones(len(SIZES), bool), slots, False)
  np.testing.assert_allclose(jitted(model)(padded)[real], jitted(model)(g), rtol=1e-5,
                             atol=1e-6)


def test_a_batch_equals_its_molecules_run_alone():
  model = build(update="residual", readout="mean")
  g = sample(5)
  batched, alone = jitted(model)(g), jitted(model)
  for b in range(len(SIZES)):
    one = {k: v[b:b + 1] for k, v in g.items()}
    np.testing.assert_allclose(alone(one)[0], batched[b], rtol=1e-5, atol=1e-6)


def test_packed_and_flattened_give_the_same_logits():
  model = build()
  g = sample(6)
  flat = jitted(model)(g)
  nodes, edges = int(g["node_mask"].sum()), int(g["edge_mask"].sum())
  pack = lambda *f: graphs.pack(*f, node_budget=nodes + 3, edge_budget=edges + 3)
  np.testing.assert_allclose(jitted(model, to_graphs=pack)(g), flat, rtol=1e-5, atol=1e-6)
  # Through apply, one molecule per group (test_graphs checks which branch runs).
  graphdef, state = nnx.split(model)
  apply = jax.jit(lambda state, *f: graphs.apply(nnx.merge(graphdef, state), *f,
                                                 node_budget=9, edge_budget=20, groups=5))
  np.testing.assert_allclose(apply(state, *molecules.fields(g)), flat, rtol=1e-5, atol=1e-6)


def reference_logits(model, g):
  """One residual step and a sum readout, looped over molecules, atoms and edges (float64)."""
  weights = lambda layer: (np.asarray(layer.kernel[...], np.float64),
                           np.asarray(layer.bias[...], np.float64) if layer.bias is not None
                           else 0.0)
  affine = lambda layer, x: x @ weights(layer)[0] + weights(layer)[1]
  relu = lambda x: np.maximum(x, 0.0)
  out = []
  for b in range(len(g["node_mask"])):
    atoms = [v for v in range(MAX_NODES) if g["node_mask"][b, v] > 0]
    h = {v: affine(model.project, g["nodes"][b, v]) for v in atoms}
    incoming = {v: np.zeros(len(h[v])) for v in atoms}
    for e in range(MAX_EDGES):
      if g["edge_mask"][b, e] > 0:
        sender, receiver = g["edge_index"][b, e]
        incoming[receiver] += relu(affine(model.message_node, h[sender]) +
                                   affine(model.message_edge, g["edges"][b, e]))
    pooled = 0.0
    for v in atoms:
      hidden = relu(affine(model.update_hidden, np.concatenate([h[v], incoming[v]])))
      pooled = pooled + h[v] + affine(model.update_out, hidden)
    out.append(affine(model.head, relu(affine(model.embedding, pooled))))
  return np.array(out)


def test_one_residual_step_with_a_sum_readout_equals_a_looped_reference():
  model = build(update="residual", readout="sum", steps=1)
  g = sample(7)
  np.testing.assert_allclose(jitted(model)(g), reference_logits(model, g), rtol=1e-4,
                             atol=1e-5)


@pytest.mark.parametrize("update, readout", [("gru", "set2set"), ("residual", "mean")])
def test_the_gradient_is_finite_and_reaches_every_parameter(update, readout):
  # Three set2set steps: at initialisation the first LSTM step sees a zero carry and a zero
  # input, so its cell is zero, and the forget gate first meets a non-zero cell at step 3.
  model = build(update=update, readout=readout, set2set_steps=3)
  graphdef, params = nnx.split(model, nnx.Param)
  g = sample(8, sizes=(3, 0, 7, 5))  # with a padding graph
  targets = jnp.asarray(np.random.default_rng(0).integers(0, 2, (4, LABELS)), jnp.float32)

  @jax.jit
  def loss_grad(params, *fields):
    def loss(params):
      logits = nnx.merge(graphdef, params)(graphs.flatten(*fields))
      return jnp.mean(jax.nn.softplus(logits) - targets * logits)  # sigmoid cross-entropy
    return jax.grad(loss)(params)

  grads = loss_grad(params, *molecules.fields(g))
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(leaf)), path
    assert np.any(leaf != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_dropout_takes_a_key_per_call_and_only_in_training():
  model = build(dropout=0.5, readout="sum")
  key = jax.random.key(3)
  embedding, logits, trained, again = jitted(model, lambda m, flat: (
      m.embed(flat), m(flat), m(flat, train=True, key=key), m(flat, train=True, key=key)))(
          sample(9))
  assert embedding.shape == (len(SIZES), 6) == (len(SIZES), model.feature_dim)
  np.testing.assert_allclose(logits, model.head(embedding), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(trained, again)
  # Dropout is inverted: kept units scaled by 1 / (1 - rate), dropped ones zero.
  keep = jax.random.bernoulli(key, 0.5, embedding.shape)
  assert not np.all(keep) and np.any(keep)
  np.testing.assert_allclose(trained, model.head(jnp.where(keep, 2 * embedding, 0)), rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="needs key="):
    model(graphs.flatten(*molecules.fields(sample(9))), train=True)


def test_create_reads_the_config_block():
  block = ml_collections.ConfigDict({"name": "mpnn", "hidden": 8, "steps": 2, "update": "residual",
                                     "readout": "sum", "embedding": 5})
  model = nnx.eval_shape(
      lambda: mpnn.create(block, NODE_FEATURES, EDGE_FEATURES, LABELS, nnx.Rngs(0)))
  assert (model.steps, model.update, model.readout) == (2, "residual", "sum")
  assert model.embedding.kernel.shape == (8, 5) and model.head.kernel.shape == (5, LABELS)
  default = nnx.eval_shape(  # the full-size defaults, shapes only
      lambda: mpnn.create({}, NODE_FEATURES, EDGE_FEATURES, LABELS, nnx.Rngs(0)))
  assert default.lstm.hidden_features == 128 and default.embedding.kernel.shape == (256, 256)
  assert (default.steps, default.set2set_steps, default.dropout) == (4, 3, 0.0)
  # It takes graphs, not one input array, so models.create does not offer it.
  assert "mpnn" not in models.available()


@pytest.mark.parametrize("key, value, message", [
    ("steps", 0, "model.steps=0 must be an integer >= 1"),
    ("hidden", 2.5, "model.hidden=2.5 must be an integer >= 1"),
    ("update", "lstm", "model.update='lstm' must be one of gru, residual"),
    ("readout", "max", "model.readout='max' must be one of set2set, sum, mean"),
    ("embedding", 0, "model.embedding=0 must be an integer >= 1"),
    ("set2set_steps", -1, "model.set2set_steps=-1 must be an integer >= 1"),
    ("dropout", 1.0, r"model.dropout=1.0 must be in \[0, 1\)"),
])
def test_bad_config_values_raise(key, value, message):
  with pytest.raises(ConfigError, match=message):
    mpnn.create({key: value}, NODE_FEATURES, EDGE_FEATURES, LABELS, nnx.Rngs(0))
