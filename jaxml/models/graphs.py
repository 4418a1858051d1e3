"""Batches of molecules as one flat graph: flattened from the padded layout, or packed.

A data source gives each molecule padded to the data set's largest (jaxml/data/base.py):
`nodes` [B, max_nodes, F], `node_mask` [B, max_nodes], `edge_index` [B, max_edges, 2]
(sender, receiver within the molecule; padded edges point at node 0), `edges`
[B, max_edges, Fe], `edge_mask` [B, max_edges]. Message passing runs on one flat graph of the
whole batch, `FlatGraphs`: nodes [N, F] and edges [E, Fe] with global sender/receiver indices,
aggregated with `jax.ops.segment_sum` and read out per molecule through `node_graph`.

Two ways to get there, with the same static shapes for every batch:

- `flatten`: N = B * max_nodes, E = B * max_edges; edge indices offset by each molecule's
  start. Always exact, but odour molecules average ~12.6 atoms against a largest of 92 (24.5
  edges against 194), so ~7/8 of the work is on padding.
- `pack`: the real nodes and edges compacted to the front of [node_budget] / [edge_budget]
  buffers (a cumulative sum gives each real node its new position; `jnp.nonzero(size=...)`
  gathers them), edges renumbered to those positions, the slots past them masked. Exact only
  when the batch fits the budgets.

`apply(fn, ...)` runs a model on the packed graph when the batch fits and on the flattened one
otherwise, under `jax.lax.cond`: every batch gets the exact answer, the step compiles once
(both branches are in one program; only the taken one runs), and the common batch runs on
the small buffers. `budgets` picks budgets that a random batch almost always fits.

Why not jraph: its last release is a 2022 dev build and the project is unmaintained; it would
also only give us `segment_sum` wrappers and padding helpers that pad to a budget on the host,
whereas packing here happens inside the jitted step.

Multiple devices. The batch arrives as global arrays sharded on its leading axis. Packing the
global batch into one flat graph is still correct (jit computes on global arrays as if on one
device), but the cumulative sum and the gathers run across every molecule of every shard, so
XLA moves the batch between devices and the packed buffers, one graph, are not split by
molecule: the message passing would not be data-parallel. `apply(..., groups=G)` keeps it
so: the batch is cut into G contiguous groups of B/G molecules (G = the number of data shards,
or a multiple of it, so that each group lies on one device), each group is packed or
flattened on its own (budgets are per group: call `budgets` with batch_size B/G), and `fn`
runs on the groups under `jax.vmap`, whose leading group axis stays sharded like the batch.
On 8 simulated devices a grouped forward and backward pass compiles to no collective but the
all-reduces (gradients, the fit test); one group all-gathers the node states at every step.
Whether the groups are packed is decided for all of them at once (every group must fit), so
the branch taken is the same on every device. `fn` sees one group, so any random key it
closes over is the same for every group: do per-molecule randomness (dropout on the
embedding) outside `apply`, on its [B, ...] outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jaxml.errors import ConfigError


@flax.struct.dataclass
class FlatGraphs:
  """One flat graph of `num_graphs` molecules (a pytree; `num_graphs` is static).

  nodes [N, F], edges [E, Fe] float32; senders, receivers [E] int32 indices into the N nodes;
  node_graph [N] int32, the molecule 0..num_graphs-1 of each node; node_mask [N] and
  edge_mask [E] float32, 1 for real nodes and edges. Masked slots carry no meaning: a model
  multiplies by the masks rather than trusting their values or indices.
  """

  nodes: jax.Array
  edges: jax.Array
  senders: jax.Array
  receivers: jax.Array
  node_graph: jax.Array
  node_mask: jax.Array
  edge_mask: jax.Array
  num_graphs: int = flax.struct.field(pytree_node=False)

  @property
  def num_nodes(self) -> int:
    return self.nodes.shape[0]


def _check_layout(nodes, node_mask, edge_index, edges, edge_mask) -> tuple[int, int, int]:
  """(B, max_nodes, max_edges), or ConfigError naming the array whose shape disagrees."""
  if node_mask.ndim != 2 or edge_mask.ndim != 2 or node_mask.shape[0] != edge_mask.shape[0]:
    raise ConfigError(f"graph masks must be [batch, slots] of one batch: node_mask "
                      f"{node_mask.shape}, edge_mask {edge_mask.shape}")
  batch, max_nodes = node_mask.shape
  max_edges = edge_mask.shape[1]
  expected = {"nodes": f"({batch}, {max_nodes}, features)",
              "edge_index": f"({batch}, {max_edges}, 2)",
              "edges": f"({batch}, {max_edges}, features)"}
  fine = {"nodes": nodes.ndim == 3 and nodes.shape[:2] == (batch, max_nodes),
          "edge_index": edge_index.shape == (batch, max_edges, 2),
          "edges": edges.ndim == 3 and edges.shape[:2] == (batch, max_edges)}
  for name, shape in (("nodes", nodes.shape), ("edge_index", edge_index.shape),
                      ("edges", edges.shape)):
    if not fine[name]:
      raise ConfigError(f"graph field {name} has shape {shape}, expected {expected[name]} "
                        f"from node_mask {node_mask.shape} and edge_mask {edge_mask.shape}")
  return batch, max_nodes, max_edges


def flatten(nodes, node_mask, edge_index, edges, edge_mask) -> FlatGraphs:
  """The padded batch as one flat graph: N = B * max_nodes nodes, E = B * max_edges edges."""
  batch, max_nodes, max_edges = _check_layout(nodes, node_mask, edge_index, edges, edge_mask)
  offsets = (jnp.arange(batch, dtype=jnp.int32) * max_nodes)[:, None]
  edge_index = jnp.asarray(edge_index, jnp.int32)
  return FlatGraphs(
      nodes=jnp.reshape(nodes, (batch * max_nodes, nodes.shape[-1])),
      edges=jnp.reshape(edges, (batch * max_edges, edges.shape[-1])),
      senders=(edge_index[..., 0] + offsets).reshape(-1),
      receivers=(edge_index[..., 1] + offsets).reshape(-1),
      node_graph=jnp.repeat(jnp.arange(batch, dtype=jnp.int32), max_nodes),
      node_mask=jnp.reshape(node_mask, (-1,)).astype(jnp.float32),
      edge_mask=jnp.reshape(edge_mask, (-1,)).astype(jnp.float32),
      num_graphs=batch,
  )


def _check_budgets(node_budget: int, edge_budget: int) -> None:
  for name, value in (("node_budget", node_budget), ("edge_budget", edge_budget)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ConfigError(f"{name}={value!r} must be an integer >= 1 to pack graphs")


def pack(nodes, node_mask, edge_index, edges, edge_mask, *, node_budget: int,
         edge_budget: int) -> FlatGraphs:
  """The batch's real nodes and edges compacted into [node_budget] / [edge_budget] buffers.

  Order is kept (molecule by molecule, then slot by slot), so `node_graph` stays sorted; the
  slots past the real ones are masked, zero-featured, and belong to the last molecule, which
  keeps it sorted too. Only correct when `fits(...)` holds: beyond the budgets nodes and
  edges are dropped silently (`apply` checks). Edges must join real nodes.
  """
  _check_budgets(node_budget, edge_budget)
  flat = flatten(nodes, node_mask, edge_index, edges, edge_mask)
  real_node, real_edge = flat.node_mask > 0, flat.edge_mask > 0
  # Where each real node lands: the count of real nodes before it.
  position = jnp.cumsum(real_node, dtype=jnp.int32) - 1
  node_from = jnp.nonzero(real_node, size=node_budget, fill_value=0)[0]
  edge_from = jnp.nonzero(real_edge, size=edge_budget, fill_value=0)[0]
  node_slot = jnp.arange(node_budget) < jnp.sum(real_node)
  edge_slot = jnp.arange(edge_budget) < jnp.sum(real_edge)
  return FlatGraphs(
      nodes=jnp.where(node_slot[:, None], flat.nodes[node_from], 0.0),
      edges=jnp.where(edge_slot[:, None], flat.edges[edge_from], 0.0),
      senders=jnp.where(edge_slot, position[flat.senders[edge_from]], 0),
      receivers=jnp.where(edge_slot, position[flat.receivers[edge_from]], 0),
      node_graph=jnp.where(node_slot, flat.node_graph[node_from], flat.num_graphs - 1),
      node_mask=jnp.where(node_slot, flat.node_mask[node_from], 0.0),
      edge_mask=jnp.where(edge_slot, flat.edge_mask[edge_from], 0.0),
      num_graphs=flat.num_graphs,
  )


def fits(node_mask, edge_mask, node_budget: int, edge_budget: int) -> jax.Array:
  """Whether the batch's real nodes and edges fit the budgets (a bool scalar array)."""
  return ((jnp.sum(node_mask > 0) <= node_budget) &
          (jnp.sum(edge_mask > 0) <= edge_budget))


def _whole(value: float) -> int:
  # ceil, after rounding away float noise: 1.25 * 128 * 12.6 is 2016.0000000000002, not 2017.
  return math.ceil(round(value, 6))


def budgets(mean_nodes: float, mean_edges: float, max_nodes: int, max_edges: int,
            batch_size: int, slack: float = 1.25) -> tuple[int, int]:
  """(node_budget, edge_budget) for packed batches of `batch_size` random molecules.

  Each is ceil(slack * batch_size * mean) + max, capped at batch_size * max. A batch's total
  is a sum of batch_size draws: its mean grows like B, its spread like sqrt(B), so the slack
  (25% over the mean, ~400 nodes for 128 odour molecules, against a standard deviation of
  ~100 if sizes spread by ~9 atoms) puts an overflow many standard deviations away for
  batches of tens or more. The `+ max` term is for small batches, where one largest molecule
  is a large share of the batch (a batch of one must fit any molecule). The cap is the
  flattened size, which holds every batch. A batch that does not fit is not wrong, only
  slower: `apply` flattens it.
  """
  if not (math.isfinite(slack) and slack >= 1):
    raise ConfigError(f"slack={slack!r} must be >= 1 and finite (budgets below the mean "
                      "would flatten most batches)")
  for name, value in (("mean_nodes", mean_nodes), ("mean_edges", mean_edges)):
    if not (math.isfinite(value) and value >= 0):
      raise ConfigError(f"{name}={value!r} must be >= 0 and finite")
  for name, value in (("max_nodes", max_nodes), ("max_edges", max_edges),
                      ("batch_size", batch_size)):
    if int(value) != value or value < 1:
      raise ConfigError(f"{name}={value!r} must be an integer >= 1")
  if mean_nodes > max_nodes or mean_edges > max_edges:
    raise ConfigError(f"mean sizes ({mean_nodes} nodes, {mean_edges} edges) exceed the largest "
                      f"({max_nodes}, {max_edges})")
  node = min(_whole(slack * batch_size * mean_nodes) + max_nodes, batch_size * max_nodes)
  edge = min(_whole(slack * batch_size * mean_edges) + max_edges, batch_size * max_edges)
  return int(node), int(edge)


def apply(fn: Callable[[FlatGraphs], Any], nodes, node_mask, edge_index, edges, edge_mask, *,
          node_budget: int, edge_budget: int, groups: int = 1) -> Any:
  """`fn(FlatGraphs) -> per-graph outputs` on the packed batch when it fits, else flattened.

  `fn` returns a pytree of [num_graphs, ...] arrays; the result is that pytree for all B
  molecules, equal (to float rounding) whichever branch ran. `node_budget=0` always
  flattens. With `groups` G > 1 the batch is cut into G groups of B/G molecules, each packed
  (or flattened) alone, budgets per group, and `fn` is vmapped over them (see the module
  doc: this is what keeps a sharded batch data-parallel). `fn` must be pure: it is traced
  twice (once per branch), and under vmap its random keys are shared by the groups.
  """
  fields = (nodes, node_mask, edge_index, edges, edge_mask)
  batch, _, _ = _check_layout(*fields)
  if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or batch % groups:
    raise ConfigError(f"groups={groups!r} must be an integer >= 1 dividing the batch of {batch}")
  per_group = batch // groups

  def run(to_graphs):
    if groups == 1:
      outputs = fn(to_graphs(*fields))
    else:
      grouped = [jnp.reshape(f, (groups, per_group, *f.shape[1:])) for f in fields]
      outputs = jax.vmap(lambda *f: fn(to_graphs(*f)))(*grouped)
      outputs = jax.tree.map(lambda x: jnp.reshape(x, (batch, *x.shape[2:])), outputs)
    wrong = [x.shape for x in jax.tree.leaves(outputs) if x.ndim == 0 or x.shape[0] != batch]
    if wrong:
      raise ConfigError(f"graph apply: fn must return per-graph outputs [num_graphs, ...]; got "
                        f"shapes {wrong} for {batch} graphs in {groups} group(s)")
    return outputs

  if node_budget == 0:
    return run(flatten)
  _check_budgets(node_budget, edge_budget)
  packed = lambda *f: pack(*f, node_budget=node_budget, edge_budget=edge_budget)
  group_masks = (jnp.reshape(node_mask, (groups, -1)), jnp.reshape(edge_mask, (groups, -1)))
  all_fit = jnp.all(jax.vmap(lambda n, e: fits(n, e, node_budget, edge_budget))(*group_masks))
  # Under grad, cond's forward returns the residuals of both branches, the branch not taken
  # filling its own with zeros: the flattened branch's are ~5x the packed ones, and writing
  # those zeros made a packed step ~2x slower (CPU, B=128). Rematerialised, the flattened
  # branch keeps only its inputs and recomputes its forward pass in the backward, a cost
  # paid only by the rare batch that does not fit.
  return jax.lax.cond(all_fit, lambda: run(packed), jax.checkpoint(lambda: run(flatten)))
