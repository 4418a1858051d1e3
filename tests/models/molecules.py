"""Small random molecules in the padded graph layout of jaxml/data/base.py, for graph tests.

A molecule of n atoms is a random spanning tree plus a few ring-closing bonds, each bond
stored as two directed edges (one each way) sharing the bond's features, in shuffled order.
Real atoms sit at random slots (not only at the front), and padding slots hold random junk
features, so a test passes only if the masks, not zeros or slot order, mark the padding.
"""

from __future__ import annotations

import numpy as np

FIELDS = ("nodes", "node_mask", "edge_index", "edges", "edge_mask")


def bonds(rng: np.random.Generator, atoms: int, rings: int = 1) -> list[tuple[int, int]]:
  pairs = {(int(rng.integers(i)), i) for i in range(1, atoms)}
  for _ in range(rings if atoms > 2 else 0):
    a, b = sorted(rng.choice(atoms, 2, replace=False).tolist())
    pairs.add((a, b))
  return sorted(pairs)


def batch(rng: np.random.Generator, sizes, *, max_nodes: int, max_edges: int,
          node_features: int = 3, edge_features: int = 2) -> dict[str, np.ndarray]:
  """A padded batch of one molecule per entry of `sizes` (0: an all-padding graph)."""
  count = len(sizes)
  out = {
      "nodes": rng.normal(size=(count, max_nodes, node_features)).astype(np.float32),
      "node_mask": np.zeros((count, max_nodes), np.float32),
      "edge_index": np.zeros((count, max_edges, 2), np.int32),
      "edges": rng.normal(size=(count, max_edges, edge_features)).astype(np.float32),
      "edge_mask": np.zeros((count, max_edges), np.float32),
  }
  for b, atoms in enumerate(sizes):
    if atoms == 0:
      continue
    slots = np.sort(rng.choice(max_nodes, atoms, replace=False))
    out["node_mask"][b, slots] = 1.0
    directed = []
    for i, j in bonds(rng, atoms):
      feature = rng.normal(size=edge_features).astype(np.float32)
      directed += [(slots[i], slots[j], feature), (slots[j], slots[i], feature)]
    if len(directed) > max_edges:
      raise ValueError(f"{atoms} atoms make {len(directed)} edges > max_edges={max_edges}")
    edge_slots = np.sort(rng.choice(max_edges, len(directed), replace=False))
    for slot, k in zip(edge_slots, rng.permutation(len(directed))):
      sender, receiver, feature = directed[k]
      out["edge_index"][b, slot] = (sender, receiver)
      out["edges"][b, slot] = feature
      out["edge_mask"][b, slot] = 1.0
  return out


def fields(graphs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
  """The arrays in the order graphs.flatten / pack / apply take them."""
  return tuple(graphs[name] for name in FIELDS)


def permute_atoms(rng: np.random.Generator, graphs: dict[str, np.ndarray]) -> dict:
  """The same molecules with every molecule's slots (atoms and padding alike) and edge slots
  shuffled, edge indices renumbered to follow their atoms."""
  out = {k: v.copy() for k, v in graphs.items()}
  for b in range(len(graphs["node_mask"])):
    order = rng.permutation(graphs["node_mask"].shape[1])  # new slot i holds old slot order[i]
    new_slot = np.argsort(order)
    out["nodes"][b] = graphs["nodes"][b, order]
    out["node_mask"][b] = graphs["node_mask"][b, order]
    edge_order = rng.permutation(graphs["edge_mask"].shape[1])
    out["edges"][b] = graphs["edges"][b, edge_order]
    out["edge_mask"][b] = graphs["edge_mask"][b, edge_order]
    out["edge_index"][b] = new_slot[graphs["edge_index"][b, edge_order]]
  return out
