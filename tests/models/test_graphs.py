"""Flat graphs: flatten and pack against looped NumPy references, budgets, and `apply`'s
exact fallback (one trace, the packed branch when the batch fits), sharded and grouped."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxml.core import mesh as mesh_lib
from jaxml.errors import ConfigError
from jaxml.models import graphs
from tests.models import molecules

SIZES = (3, 7, 1, 0, 5, 9)  # one lone atom, one all-padding graph
MAX_NODES, MAX_EDGES = 10, 24


def sample(seed=0, sizes=SIZES):
  graph_batch = molecules.batch(np.random.default_rng(seed), sizes, max_nodes=MAX_NODES,
                                max_edges=MAX_EDGES)
  return graph_batch, molecules.fields(graph_batch)


def packed_reference(g):
  """Molecule by molecule, slot by slot: the real nodes and edges, endpoints renumbered."""
  nodes, node_graph, edges, senders, receivers = [], [], [], [], []
  for b in range(len(g["node_mask"])):
    slots = np.flatnonzero(g["node_mask"][b] > 0)
    new_index = {slot: len(nodes) + i for i, slot in enumerate(slots)}
    for e in np.flatnonzero(g["edge_mask"][b] > 0):
      sender, receiver = g["edge_index"][b, e]
      senders.append(new_index[sender])
      receivers.append(new_index[receiver])
      edges.append(g["edges"][b, e])
    nodes += list(g["nodes"][b, slots])
    node_graph += [b] * len(slots)
  return (np.array(nodes), np.array(node_graph), np.array(edges), np.array(senders),
          np.array(receivers))


def test_flatten_offsets_every_molecule_by_its_first_slot():
  g, fields = sample()
  flat = graphs.flatten(*fields)
  assert flat.num_graphs == len(SIZES) and flat.num_nodes == len(SIZES) * MAX_NODES
  for b in range(len(SIZES)):
    for e in range(MAX_EDGES):
      k = b * MAX_EDGES + e
      assert (flat.senders[k], flat.receivers[k]) == tuple(g["edge_index"][b, e] + b * MAX_NODES)
      np.testing.assert_array_equal(flat.edges[k], g["edges"][b, e])
    for n in range(MAX_NODES):
      assert flat.node_graph[b * MAX_NODES + n] == b
      np.testing.assert_array_equal(flat.nodes[b * MAX_NODES + n], g["nodes"][b, n])
  np.testing.assert_array_equal(flat.node_mask, g["node_mask"].reshape(-1))
  np.testing.assert_array_equal(flat.edge_mask, g["edge_mask"].reshape(-1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pack_carries_exactly_the_real_nodes_and_edges(seed):
  g, fields = sample(seed)
  nodes, node_graph, edges, senders, receivers = packed_reference(g)
  n, e = len(nodes), len(edges)
  packed = jax.jit(lambda *f: graphs.pack(*f, node_budget=n + 4, edge_budget=e + 5))(*fields)
  np.testing.assert_array_equal(packed.nodes[:n], nodes)
  np.testing.assert_array_equal(packed.node_graph[:n], node_graph)
  np.testing.assert_array_equal(packed.edges[:e], edges)
  np.testing.assert_array_equal(packed.senders[:e], senders)
  np.testing.assert_array_equal(packed.receivers[:e], receivers)
  np.testing.assert_array_equal(packed.node_mask, np.arange(n + 4) < n)
  np.testing.assert_array_equal(packed.edge_mask, np.arange(e + 5) < e)
  # The slots past the real ones: zero features, in range, node_graph still sorted.
  assert not np.any(packed.nodes[n:]) and not np.any(packed.edges[e:])
  assert np.all(np.diff(packed.node_graph) >= 0) and packed.num_graphs == len(SIZES)
  assert np.all(packed.senders[e:] == 0) and np.all(packed.receivers[e:] == 0)


def message_sums(flat: graphs.FlatGraphs) -> jax.Array:
  """Per molecule, the masked sum over edges of sender features, scaled by receiver degree."""
  messages = flat.nodes[flat.senders] * flat.edge_mask[:, None]
  received = jax.ops.segment_sum(messages, flat.receivers, num_segments=flat.num_nodes)
  degree = jax.ops.segment_sum(flat.edge_mask, flat.receivers, num_segments=flat.num_nodes)
  per_node = received * (1 + degree)[:, None] * flat.node_mask[:, None]
  return jax.ops.segment_sum(per_node, flat.node_graph, num_segments=flat.num_graphs)


def message_sums_reference(g):
  out = np.zeros((len(g["node_mask"]), g["nodes"].shape[-1]))
  for b in range(len(out)):
    real = [e for e in range(MAX_EDGES) if g["edge_mask"][b, e] > 0]
    degree = {r: sum(g["edge_index"][b, e, 1] == r for e in real) for r in range(MAX_NODES)}
    for e in real:
      sender, receiver = g["edge_index"][b, e]
      out[b] += g["nodes"][b, sender] * (1 + degree[receiver])
  return out


def test_segment_sums_over_packed_and_flattened_graphs_agree_with_a_loop():
  g, fields = sample(3)
  expected = message_sums_reference(g)
  flat = message_sums(graphs.flatten(*fields))
  packed = message_sums(graphs.pack(*fields, node_budget=40, edge_budget=80))
  np.testing.assert_allclose(flat, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(packed, expected, rtol=1e-5, atol=1e-5)


def test_fits_counts_real_slots_only():
  g, fields = sample()
  nodes, edges = int(g["node_mask"].sum()), int(g["edge_mask"].sum())
  assert bool(graphs.fits(fields[1], fields[4], nodes, edges))
  assert not bool(graphs.fits(fields[1], fields[4], nodes - 1, edges))
  assert not bool(graphs.fits(fields[1], fields[4], nodes, edges - 1))


def per_graph(flat: graphs.FlatGraphs):
  """Per-graph outputs, plus the node count of the graph they ran on: which branch ran."""
  return {"sums": message_sums(flat), "nodes": jnp.full(flat.num_graphs, flat.num_nodes)}


def test_apply_is_exact_whether_or_not_the_batch_fits_and_traces_once():
  small, small_fields = sample(4, sizes=(2, 3, 1, 0, 2, 3))  # 11 atoms, 18 edges
  large, large_fields = sample(5)  # 25 atoms
  node_budget, edge_budget = 12, 20

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(*fields):
    return graphs.apply(per_graph, *fields, node_budget=node_budget, edge_budget=edge_budget)

  for g, fields, ran_on in ((small, small_fields, node_budget),
                            (large, large_fields, len(SIZES) * MAX_NODES)):
    out = run(*fields)
    np.testing.assert_allclose(out["sums"], message_sums_reference(g), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["nodes"], ran_on)


def test_a_zero_node_budget_always_flattens():
  g, fields = sample(6, sizes=(1, 1, 1, 1, 1, 1))
  out = graphs.apply(per_graph, *fields, node_budget=0, edge_budget=0)
  np.testing.assert_array_equal(out["nodes"], len(SIZES) * MAX_NODES)
  np.testing.assert_allclose(out["sums"], message_sums_reference(g), rtol=1e-5, atol=1e-5)


def test_grouped_apply_on_a_sharded_batch_equals_one_group():
  """Eight molecules per device, packed per device: the same outputs as the whole batch at
  once, on the packed branch only while every group fits."""
  mesh = mesh_lib.make_mesh()
  devices = mesh.devices.size
  sizes = np.random.default_rng(7).integers(0, 9, 4 * devices)
  g, fields = sample(7, sizes=tuple(sizes))
  sharded = jax.device_put(fields, NamedSharding(mesh, P(mesh_lib.DATA_AXIS)))
  per_group = 4
  busiest = max(g["node_mask"][i:i + per_group].sum() for i in range(0, len(sizes), per_group))

  def run(node_budget, groups):
    return jax.jit(lambda *f: graphs.apply(per_graph, *f, node_budget=node_budget,
                                           edge_budget=10 * per_group * 2, groups=groups))
  expected = message_sums_reference(g)
  fit = run(int(busiest), devices)(*sharded)
  np.testing.assert_allclose(fit["sums"], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(fit["nodes"], busiest)  # each group's packed graph
  assert fit["sums"].sharding.spec[0] == mesh_lib.DATA_AXIS
  overflow = run(int(busiest) - 1, devices)(*sharded)  # one group overflows: all flatten
  np.testing.assert_allclose(overflow["sums"], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(overflow["nodes"], per_group * MAX_NODES)
  # Data-parallel: each device packs and passes messages on its own molecules; the only
  # collective left is the all-reduce that decides, for every group at once, whether to pack.
  hlo = run(int(busiest), devices).lower(*sharded).compile().as_text()
  for collective in ("all-gather", "all-to-all", "collective-permute", "reduce-scatter"):
    assert collective not in hlo
  whole = run(int(g["node_mask"].sum()), 1)(*fields)
  np.testing.assert_allclose(whole["sums"], expected, rtol=1e-5, atol=1e-5)


def test_budgets_are_pinned():
  # The odour data: ~12.6 atoms and 24.5 edges per molecule, at most 92 and 194.
  assert graphs.budgets(12.6, 24.5, 92, 194, 128) == (2016 + 92, 3920 + 194)
  assert graphs.budgets(12.6, 24.5, 92, 194, 16, slack=1.5) == (303 + 92, 588 + 194)
  assert graphs.budgets(12.6, 24.5, 92, 194, 1) == (92, 194)  # capped at the flattened size


@pytest.mark.parametrize("args, message", [
    ((12.6, 24.5, 92, 194, 128, 0.9), "slack=0.9 must be >= 1"),
    ((-1.0, 24.5, 92, 194, 128), "mean_nodes=-1.0 must be >= 0"),
    ((12.6, 24.5, 92, 194, 0), "batch_size=0 must be an integer >= 1"),
    ((120.0, 24.5, 92, 194, 8), "exceed the largest"),
])
def test_bad_budget_arguments_raise(args, message):
  with pytest.raises(ConfigError, match=message):
    graphs.budgets(*args)


def test_bad_layouts_and_settings_raise():
  _, fields = sample()
  with pytest.raises(ConfigError, match="groups=4 must be an integer >= 1 dividing the batch"):
    graphs.apply(per_graph, *fields, node_budget=10, edge_budget=10, groups=4)
  with pytest.raises(ConfigError, match="edge_budget=0 must be an integer >= 1"):
    graphs.apply(per_graph, *fields, node_budget=10, edge_budget=0)
  with pytest.raises(ConfigError, match=r"edge_index has shape \(6, 24\)"):
    graphs.flatten(fields[0], fields[1], fields[2][..., 0], fields[3], fields[4])
  with pytest.raises(ConfigError, match="fn must return per-graph outputs"):
    graphs.apply(lambda flat: flat.nodes.sum(), *fields, node_budget=0, edge_budget=0)
