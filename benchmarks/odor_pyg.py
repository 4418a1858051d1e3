"""jaxml's odour MPNN (jaxml/models/mpnn.py) written in PyTorch Geometric: the peer of
benchmarks/odor.py. Written for this project from the model's definition, as a PyG user would
write it (a `MessagePassing` layer, `torch.nn.GRUCell`, `torch_geometric.nn.aggr.Set2Set`):

  h0 = W_in x                                          node projection to `hidden`
  m_v = sum over edges (s -> v) of relu(W_h h_s + W_e e_sv + b)    `steps` times, with
  h_v = GRUCell(m_v, h_v)                                           weights shared across steps
  g = Set2Set(h)                                       [B, 2 hidden]
  logits = W_o relu(W_z g)                             the 256-wide embedding, the 138 labels
  loss = mean of the class-weighted sigmoid cross-entropy (jaxml/losses/multilabel.py)

As in jaxml, W_h h is computed per node and gathered by the edges, and W_e e once per forward
pass (bonds do not change across steps): the same arithmetic, not a cheaper or dearer variant.

One difference of form, none of function: torch's recurrent cells carry two bias vectors per
gate (`bias_ih` and `bias_hh`), flax's one (nnx.GRUCell: on the input side, none on the
recurrent side, so its candidate is tanh(W_in x + b_in + r * W_hn h); nnx.LSTMCell: on the
recurrent side). `bias_hh` is therefore zeroed and frozen (`requires_grad=False`, left out of
the optimizer), which makes the torch cells compute exactly flax's, and the trainable
parameter counts equal. `copy_from_jax` loads a jaxml model's weights, so the two can be
checked to predict the same probabilities and trained from the same start.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.aggr import Set2Set


class EdgeMessages(MessagePassing):
  """Sum at each receiver of relu(node_term[sender] + bond_term[edge])."""

  def __init__(self):
    super().__init__(aggr="add")

  def forward(self, node_term, bond_term, edge_index):  # pylint: disable=arguments-differ
    return self.propagate(edge_index, x=node_term, bond=bond_term)

  def message(self, x_j, bond):  # pylint: disable=arguments-differ
    return torch.relu(x_j + bond)


class MPNN(torch.nn.Module):
  """PyG Batch -> multi-label logits [num_graphs, num_labels]; jaxml's MPNN with update "gru"
  and readout "set2set"."""

  def __init__(self, node_features: int, edge_features: int, num_labels: int, *, hidden: int,
               steps: int, set2set_steps: int, embedding: int):
    super().__init__()
    self.steps = steps
    self.project = torch.nn.Linear(node_features, hidden)
    self.message_node = torch.nn.Linear(hidden, hidden)
    self.message_edge = torch.nn.Linear(edge_features, hidden, bias=False)
    self.messages = EdgeMessages()
    self.gru = torch.nn.GRUCell(hidden, hidden)
    self.readout = Set2Set(hidden, processing_steps=set2set_steps)
    self.embedding = torch.nn.Linear(2 * hidden, embedding)
    self.head = torch.nn.Linear(embedding, num_labels)
    for bias in self.recurrent_biases():  # flax's cells have none of these (module doc)
      with torch.no_grad():
        bias.zero_()
      bias.requires_grad_(False)

  def recurrent_biases(self) -> list[torch.nn.Parameter]:
    return [self.gru.bias_hh, self.readout.lstm.bias_hh_l0]

  def forward(self, batch: Batch) -> torch.Tensor:
    h = self.project(batch.x)
    bond_term = self.message_edge(batch.edge_attr)
    for _ in range(self.steps):
      incoming = self.messages(self.message_node(h), bond_term, batch.edge_index)
      h = self.gru(incoming, h)
    pooled = self.readout(h, index=batch.batch, ptr=batch.ptr, dim_size=batch.num_graphs)
    return self.head(torch.relu(self.embedding(pooled)))


def trainable_count(model: torch.nn.Module) -> int:
  return sum(p.numel() for p in model.parameters() if p.requires_grad)


def to_batch(padded: dict) -> Batch:
  """One PyG Batch of the real atoms and bonds of a batch in jaxml's padded layout
  (jaxml/data/base.py; numpy arrays), molecules in the same order."""
  graphs = []
  for i in range(len(padded["node_mask"])):
    nodes, edges = int(padded["node_mask"][i].sum()), int(padded["edge_mask"][i].sum())
    graphs.append(Data(
        x=torch.from_numpy(np.array(padded["nodes"][i, :nodes])),
        edge_index=torch.from_numpy(np.array(padded["edge_index"][i, :edges].T, np.int64)),
        edge_attr=torch.from_numpy(np.array(padded["edges"][i, :edges])),
        y=torch.from_numpy(np.array(padded["labels"][i:i + 1], np.float32))))
  return Batch.from_data_list(graphs)


def loss_fn(logits, labels, positive, negative) -> torch.Tensor:
  """jaxml's `multilabel.sigmoid_cross_entropy`, averaged over the batch: the mean over
  molecules and labels of the class-weighted binary cross-entropy."""
  weights = labels * positive + (1.0 - labels) * negative
  return F.binary_cross_entropy_with_logits(logits, labels, weight=weights)


def make_optimizer(model, *, learning_rate: float, weight_decay: float, warmup_steps: int,
                   num_steps: int):
  """optax's adamw with jaxml's schedule (linear warm-up from 0, then cosine decay to 0;
  jaxml/core/optim.py) on the trainable parameters."""
  optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                lr=learning_rate, weight_decay=weight_decay)
  decay = max(num_steps - warmup_steps, 1)

  def factor(step: int) -> float:
    if step < warmup_steps:
      return step / warmup_steps
    return 0.5 * (1.0 + np.cos(np.pi * min(step - warmup_steps, decay) / decay))

  return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_step(model, optimizer, schedule, batch: Batch, positive, negative) -> torch.Tensor:
  optimizer.zero_grad(set_to_none=True)
  loss = loss_fn(model(batch), batch.y, positive, negative)
  loss.backward()
  optimizer.step()
  schedule.step()
  return loss.detach()


def copy_from_jax(model: MPNN, params: dict) -> None:
  """Loads a jaxml MPNN's weights (`nnx.to_pure_dict` of its params) into `model`. flax
  kernels are [in, out], torch weights [out, in]; both order GRU gates r, z, n and LSTM gates
  i, f, g, o."""
  t = lambda x: torch.from_numpy(np.array(x, np.float32))

  def linear(layer, name):
    layer.weight.copy_(t(params[name]["kernel"]).T)
    if layer.bias is not None:
      layer.bias.copy_(t(params[name]["bias"]))

  with torch.no_grad():
    for name in ("project", "message_node", "message_edge", "embedding", "head"):
      linear(getattr(model, name), name)
    gru = params["gru"]
    model.gru.weight_ih.copy_(t(gru["dense_i"]["kernel"]).T)
    model.gru.bias_ih.copy_(t(gru["dense_i"]["bias"]))
    model.gru.weight_hh.copy_(t(gru["dense_h"]["kernel"]).T)
    lstm, gates = params["lstm"], ("i", "f", "g", "o")
    cell = model.readout.lstm
    cell.weight_ih_l0.copy_(torch.cat([t(lstm[f"i{g}"]["kernel"]).T for g in _flax(gates)]))
    cell.weight_hh_l0.copy_(torch.cat([t(lstm[f"h{g}"]["kernel"]).T for g in gates]))
    cell.bias_ih_l0.copy_(torch.cat([t(lstm[f"h{g}"]["bias"]) for g in gates]))
    for bias in model.recurrent_biases():
      bias.zero_()


def _flax(gates):
  # nnx.LSTMCell names its input-side forget kernel `if_` (`if` is a keyword).
  return [g if g != "f" else "f_" for g in gates]
