"""A message-passing neural network for molecules (Gilmer et al. 2017), as the odour model of
"Machine Learning for Scent" (Sanchez-Lengeling et al. 2019) uses it.

It runs on a `FlatGraphs` (jaxml/models/graphs.py: the batch flattened or packed into one
graph) and is written on `jax.ops.segment_sum`, not jraph: jraph's last release is a 2022 dev
build and the project is unmaintained.

  h0 = W_in x_v                                       input projection to `hidden`
  m_v = sum over edges (s -> v) of relu(W_h h_s + W_e e_sv + b)     edge-conditioned message
  h_v = GRU(h_v, m_v)  or  h_v + MLP([h_v, m_v])      update ("gru" or "residual")
  repeated `steps` times with one set of weights (Gilmer's weight tying)
  g = sum / mean of the molecule's h_v, or set2set    readout ("sum", "mean", "set2set")
  z = relu(W_z g)                                     the odour embedding (the paper's
                                                       penultimate layer, width `embedding`)
  logits = W_o dropout(z)                             multi-label: the loss applies sigmoid

The message is a one-layer MLP of [h_s, e_sv] rather than Gilmer's edge network, whose
per-edge hidden x hidden matrix (16k numbers per edge at hidden 128, made by another network
from the bond features) costs ~hidden times more per edge, which on CPU is what decides the
step time. Splitting the layer's kernel by its two inputs makes it cheaper still: W_h h is
computed once per node and gathered (E is ~2N for molecules), and W_e e once per forward pass
(bonds do not change across steps). A second message layer would be wasted: its linear
output map would be summed, then met the update's own input kernel, and linear maps compose.

Masks: padding nodes are zeroed after the projection and after every step, padding edges'
messages are multiplied by `edge_mask`, and readouts weigh nodes by `node_mask`, so no
output depends on a padding node, a padding edge, or another molecule in the batch.

Dropout is on the embedding only (as in the paper) and takes its key per call
(`model(graphs, train=True, key=key)`); the module holds no RNG state, so a jitted step stays
a pure function of (params, batch, key). Inside `graphs.apply` with groups, call
`apply(model.embed, ...)` and then `model.logits_from(embedding, train=True, key=key)` on the
whole batch, so that groups do not share dropout masks.

Config (`create`), every key optional: `hidden` (128), `steps` (4), `update` ("gru"),
`readout` ("set2set"), `embedding` (256), `set2set_steps` (3), `dropout` (0.0).
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from jaxml.core import checks
from jaxml.models.graphs import FlatGraphs

UPDATES = ("gru", "residual")
READOUTS = ("set2set", "sum", "mean")
DEFAULTS = {"hidden": 128, "steps": 4, "update": "gru", "readout": "set2set", "embedding": 256,
            "set2set_steps": 3, "dropout": 0.0}
RULES = {
    "model.hidden": checks.count(1),
    "model.steps": checks.count(1),
    "model.update": checks.one_of(*UPDATES),
    "model.readout": checks.one_of(*READOUTS),
    "model.embedding": checks.count(1),
    "model.set2set_steps": checks.count(1),
    "model.dropout": checks.in_range(0, 1, open_high=True),
}


class MPNN(nnx.Module):
  """Graphs -> odour embedding [B, embedding] -> multi-label logits [B, num_labels]."""

  def __init__(self, node_features: int, edge_features: int, num_labels: int, *,
               hidden: int = 128, steps: int = 4, update: str = "gru",
               readout: str = "set2set", embedding: int = 256, set2set_steps: int = 3,
               dropout: float = 0.0, rngs: nnx.Rngs):
    settings = {"hidden": hidden, "steps": steps, "update": update, "readout": readout,
                "embedding": embedding, "set2set_steps": set2set_steps, "dropout": dropout}
    checks.check_values({"model": settings}, RULES)
    self.steps, self.update, self.readout = steps, update, readout
    self.set2set_steps, self.dropout = set2set_steps, float(dropout)
    self.project = nnx.Linear(node_features, hidden, rngs=rngs)
    # The message layer's kernel, split by input: [h_s, e] @ W = h_s @ W_h + e @ W_e.
    self.message_node = nnx.Linear(hidden, hidden, rngs=rngs)
    self.message_edge = nnx.Linear(edge_features, hidden, use_bias=False, rngs=rngs)
    if update == "gru":
      self.gru = nnx.GRUCell(hidden, hidden, rngs=rngs)
    else:
      self.update_hidden = nnx.Linear(2 * hidden, hidden, rngs=rngs)
      self.update_out = nnx.Linear(hidden, hidden, rngs=rngs)
    if readout == "set2set":
      self.lstm = nnx.LSTMCell(2 * hidden, hidden, rngs=rngs)
    self.readout_dim = 2 * hidden if readout == "set2set" else hidden
    self.embedding = nnx.Linear(self.readout_dim, embedding, rngs=rngs)
    self.feature_dim = embedding
    self.head = nnx.Linear(embedding, num_labels, rngs=rngs)

  def node_states(self, graphs: FlatGraphs) -> jax.Array:
    """Every node's state after the message-passing steps, [N, hidden]; zero on padding."""
    node_mask = graphs.node_mask[:, None]
    edge_mask = graphs.edge_mask[:, None]
    h = self.project(graphs.nodes) * node_mask
    bond_term = self.message_edge(graphs.edges)
    for _ in range(self.steps):
      messages = jax.nn.relu(self.message_node(h)[graphs.senders] + bond_term) * edge_mask
      incoming = jax.ops.segment_sum(messages, graphs.receivers, num_segments=graphs.num_nodes)
      if self.update == "gru":
        h, _ = self.gru(h, incoming)
      else:
        h = h + self.update_out(jax.nn.relu(self.update_hidden(
            jnp.concatenate([h, incoming], axis=-1))))
      h = h * node_mask
    return h

  def _set2set(self, h: jax.Array, graphs: FlatGraphs) -> jax.Array:
    """Vinyals et al. 2015: an LSTM query attends over each molecule's nodes; [B, 2 hidden]."""
    num_graphs, hidden = graphs.num_graphs, h.shape[-1]
    segment = lambda x, op=jax.ops.segment_sum: op(x, graphs.node_graph, num_segments=num_graphs)
    real = graphs.node_mask > 0
    carry = (jnp.zeros((num_graphs, hidden), h.dtype), jnp.zeros((num_graphs, hidden), h.dtype))
    q_star = jnp.zeros((num_graphs, 2 * hidden), h.dtype)
    for _ in range(self.set2set_steps):
      carry, query = self.lstm(carry, q_star)
      scores = jnp.sum(h * query[graphs.node_graph], axis=-1)
      # A per-molecule softmax over real nodes. The max only steadies exp (softmax does not
      # depend on it), so no gradient flows through it. A molecule with no real nodes (a
      # padding graph) has max -inf: read as 0, to keep infinities out of every intermediate
      # value, and its attention (all weights zero) reads nothing.
      top = segment(jnp.where(real, scores, -jnp.inf), jax.ops.segment_max)
      top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
      weights = jnp.exp(jnp.where(real, scores - top[graphs.node_graph], 0.0)) * graphs.node_mask
      total = segment(weights)
      attention = weights / jnp.where(total > 0, total, 1.0)[graphs.node_graph]
      q_star = jnp.concatenate([query, segment(attention[:, None] * h)], axis=-1)
    return q_star

  def embed(self, graphs: FlatGraphs, *, train: bool = False) -> jax.Array:
    """The odour embedding [num_graphs, embedding]. `train` is accepted for the shared model
    interface; nothing before the embedding behaves differently in training."""
    del train
    h = self.node_states(graphs)
    if self.readout == "set2set":
      pooled = self._set2set(h, graphs)
    else:
      pooled = jax.ops.segment_sum(h, graphs.node_graph, num_segments=graphs.num_graphs)
      if self.readout == "mean":
        count = jax.ops.segment_sum(graphs.node_mask, graphs.node_graph,
                                    num_segments=graphs.num_graphs)
        pooled = pooled / jnp.maximum(count, 1.0)[:, None]
    return jax.nn.relu(self.embedding(pooled))

  def logits_from(self, embedding: jax.Array, *, train: bool = False,
                  key: jax.Array | None = None) -> jax.Array:
    """Dropout (in training) then the head: logits [B, num_labels] from `embed`'s output."""
    if train and self.dropout > 0:
      if key is None:
        raise ValueError("dropout > 0 in training needs key=<a jax random key>")
      keep = jax.random.bernoulli(key, 1.0 - self.dropout, embedding.shape)
      embedding = jnp.where(keep, embedding / (1.0 - self.dropout), 0.0)
    return self.head(embedding)

  def __call__(self, graphs: FlatGraphs, *, train: bool = False,
               key: jax.Array | None = None) -> jax.Array:
    return self.logits_from(self.embed(graphs, train=train), train=train, key=key)


def create(model_config: ml_collections.ConfigDict | dict, node_features: int,
           edge_features: int, num_labels: int, rngs: nnx.Rngs) -> MPNN:
  """An MPNN from a `model` config block (the module doc lists its keys); ConfigError names a
  bad value (`model.steps=0 must be an integer >= 1`)."""
  block = dict(model_config or {})
  settings = {name: block.get(name, default) for name, default in DEFAULTS.items()}
  return MPNN(node_features, edge_features, num_labels, **settings, rngs=rngs)
