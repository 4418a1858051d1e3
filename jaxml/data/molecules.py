"""Molecules as graphs and fingerprints, from SMILES with RDKit: host code, no JAX.

`featurize` turns one SMILES into a `MoleculeGraph` of heavy atoms (hydrogens are counted on
their atom, not made nodes: it about halves the graph and is what graph networks for odour and
property prediction use). `pad` stacks graphs into the padded per-example layout that
`jaxml.data.base` fixes for graphs, so every batch has one shape and a jitted step compiles
once. `morgan_counts` gives count-based Morgan fingerprints, the Principal Odor Map paper's
baseline representation, and `scaffold` the Bemis-Murcko scaffold that scaffold splits group by.

Node features are one-hot groups plus two flags, in this order (names in NODE_FEATURE_NAMES):

  element        C N O S F Cl Br I P Si B Se, other       13
  degree         heavy-atom neighbours 0 1 2 3 4 5+         6
  charge         formal charge -1 0 +1, other               4
  hydrogens      total (implicit + explicit) 0 1 2 3 4+     5
  hybridisation  SP SP2 SP3 SP3D SP3D2, other               6
  aromatic, in_ring                                         2   -> NODE_FEATURES = 36

Edge features (EDGE_FEATURE_NAMES): bond type single, double, triple, aromatic (one-hot; the
rare types SMILES can also write, such as dative bonds, get none of the four rather than a
column no data set here uses), conjugated, in_ring -> EDGE_FEATURES = 6. Each bond is two
directed edges, (begin, end) then (end, begin), with the same features, so a message-passing
sum over receivers sees every neighbour.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from jaxml.errors import ConfigError

try:  # RDKit is an optional extra: without it, choosing a molecule source is one line
  from rdkit import Chem, RDLogger
  from rdkit.Chem import rdFingerprintGenerator
  from rdkit.Chem.Scaffolds import MurckoScaffold
except ImportError:
  raise ConfigError("molecules need RDKit: pip install 'jaxml[molecules]'") from None

ELEMENTS = ("C", "N", "O", "S", "F", "Cl", "Br", "I", "P", "Si", "B", "Se")
MAX_DEGREE = 5  # the last degree bucket is "5 or more"
CHARGES = (-1, 0, 1)
MAX_HYDROGENS = 4  # the last hydrogen bucket is "4 or more"
HYBRIDISATIONS = ("SP", "SP2", "SP3", "SP3D", "SP3D2")
BOND_TYPES = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")

NODE_GROUPS = (
    ("element", (*ELEMENTS, "other")),
    ("degree", (*map(str, range(MAX_DEGREE)), f"{MAX_DEGREE}+")),
    ("charge", ("-1", "0", "+1", "other")),
    ("hydrogens", (*map(str, range(MAX_HYDROGENS)), f"{MAX_HYDROGENS}+")),
    ("hybridisation", (*HYBRIDISATIONS, "other")),
)
NODE_FLAGS = ("aromatic", "in_ring")
NODE_FEATURE_NAMES = (*(f"{group}={value}" for group, values in NODE_GROUPS for value in values),
                      *NODE_FLAGS)
NODE_FEATURES = len(NODE_FEATURE_NAMES)
EDGE_FEATURE_NAMES = (*(f"bond={t.lower()}" for t in BOND_TYPES), "conjugated", "in_ring")
EDGE_FEATURES = len(EDGE_FEATURE_NAMES)

# Where each one-hot group starts in a node's feature vector.
_OFFSETS = dict(zip((g for g, _ in NODE_GROUPS),
                    np.cumsum([0, *(len(v) for _, v in NODE_GROUPS)]).tolist()))
_FLAGS_AT = sum(len(values) for _, values in NODE_GROUPS)
_HYBRIDISATION = {getattr(Chem.HybridizationType, h): i for i, h in enumerate(HYBRIDISATIONS)}
_BOND_TYPE = {getattr(Chem.BondType, t): i for i, t in enumerate(BOND_TYPES)}
_SHOW = 5  # invalid SMILES named in an error message


@dataclasses.dataclass(frozen=True)
class MoleculeGraph:
  """One molecule's heavy-atom graph; arrays are read-only, as they are shared by a cache.

  nodes:      [n, NODE_FEATURES] float32, one row per heavy atom in RDKit's atom order.
  edge_index: [e, 2] int32 (sender, receiver); e = 2 * bonds, both directions.
  edges:      [e, EDGE_FEATURES] float32, the features of each directed edge's bond.
  """

  nodes: np.ndarray
  edge_index: np.ndarray
  edges: np.ndarray

  @property
  def num_nodes(self) -> int:
    return len(self.nodes)

  @property
  def num_edges(self) -> int:
    return len(self.edge_index)


def _parse(smiles: str):
  RDLogger.DisableLog("rdApp.*")  # an invalid SMILES is reported by the caller, by row
  mol = Chem.MolFromSmiles(smiles)
  # An empty SMILES parses to a molecule without atoms: no graph to learn from.
  return mol if mol is not None and mol.GetNumAtoms() else None


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  for array in arrays:
    array.flags.writeable = False
  return arrays


def _atom_row(atom) -> list[int]:
  """The columns set to 1 for `atom`."""
  symbol = atom.GetSymbol()
  charge = atom.GetFormalCharge()
  columns = [
      _OFFSETS["element"] + (ELEMENTS.index(symbol) if symbol in ELEMENTS else len(ELEMENTS)),
      _OFFSETS["degree"] + min(atom.GetDegree(), MAX_DEGREE),
      _OFFSETS["charge"] + (CHARGES.index(charge) if charge in CHARGES else len(CHARGES)),
      _OFFSETS["hydrogens"] + min(atom.GetTotalNumHs(), MAX_HYDROGENS),
      _OFFSETS["hybridisation"] + _HYBRIDISATION.get(atom.GetHybridization(),
                                                     len(HYBRIDISATIONS)),
  ]
  if atom.GetIsAromatic():
    columns.append(_FLAGS_AT)
  if atom.IsInRing():
    columns.append(_FLAGS_AT + 1)
  return columns


def _bond_row(bond) -> list[int]:
  columns = [_BOND_TYPE[bond.GetBondType()]] if bond.GetBondType() in _BOND_TYPE else []
  if bond.GetIsConjugated():
    columns.append(len(BOND_TYPES))
  if bond.IsInRing():
    columns.append(len(BOND_TYPES) + 1)
  return columns


def featurize(smiles: str) -> MoleculeGraph | None:
  """The heavy-atom graph of `smiles`, or None when RDKit cannot parse it (or it has no atoms)."""
  mol = _parse(smiles)
  if mol is None:
    return None
  nodes = np.zeros((mol.GetNumAtoms(), NODE_FEATURES), np.float32)
  for atom in mol.GetAtoms():
    nodes[atom.GetIdx(), _atom_row(atom)] = 1.0
  bonds = mol.GetBonds()
  edge_index = np.zeros((2 * len(bonds), 2), np.int32)
  edges = np.zeros((2 * len(bonds), EDGE_FEATURES), np.float32)
  for i, bond in enumerate(bonds):
    begin, end = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
    edge_index[2 * i] = begin, end
    edge_index[2 * i + 1] = end, begin
    edges[2 * i:2 * i + 2, _bond_row(bond)] = 1.0
  return MoleculeGraph(*_read_only(nodes, edge_index, edges))


def pad(graphs: Sequence[MoleculeGraph], max_nodes: int, max_edges: int) -> dict[str, np.ndarray]:
  """`graphs` stacked in the padded layout of `jaxml.data.base` (its module doc, "Graphs"):
  `nodes` [N, max_nodes, NODE_FEATURES] f32, `node_mask` [N, max_nodes] f32, `edge_index`
  [N, max_edges, 2] int32 (padded edges point at node 0, and are masked), `edges`
  [N, max_edges, EDGE_FEATURES] f32, `edge_mask` [N, max_edges] f32. A graph over the budget
  is a ConfigError naming it."""
  count = len(graphs)
  arrays = {"nodes": np.zeros((count, max_nodes, NODE_FEATURES), np.float32),
            "node_mask": np.zeros((count, max_nodes), np.float32),
            "edge_index": np.zeros((count, max_edges, 2), np.int32),
            "edges": np.zeros((count, max_edges, EDGE_FEATURES), np.float32),
            "edge_mask": np.zeros((count, max_edges), np.float32)}
  for i, graph in enumerate(graphs):
    nodes, edges = graph.num_nodes, graph.num_edges
    if nodes > max_nodes or edges > max_edges:
      raise ConfigError(f"molecule graph {i} has {nodes} atoms and {edges} edges, over the "
                        f"budget of {max_nodes} and {max_edges}")
    arrays["nodes"][i, :nodes] = graph.nodes
    arrays["node_mask"][i, :nodes] = 1.0
    arrays["edge_index"][i, :edges] = graph.edge_index
    arrays["edges"][i, :edges] = graph.edges
    arrays["edge_mask"][i, :edges] = 1.0
  return arrays


# Cached per process, so the folds and runs of one study that load the same data set pay for
# RDKit once. The 4,983 odour molecules take 1.4 s (1.3-2.2 s over runs, one core of a 2-core
# CPU, RDKit 2026.09); a cache hit costs hashing the tuple of SMILES, about 1 ms.
@functools.lru_cache(maxsize=8)
def _featurize_cached(smiles: tuple[str, ...]) -> tuple[tuple[MoleculeGraph, ...],
                                                        tuple[int, ...]]:
  graphs, invalid = [], []
  for row, text in enumerate(smiles):
    graph = featurize(text)
    if graph is None:
      invalid.append(row)
    else:
      graphs.append(graph)
  return tuple(graphs), tuple(invalid)


def featurize_all(smiles: Sequence[str]) -> tuple[list[MoleculeGraph], list[int]]:
  """(graphs of the valid SMILES in order, positions of the invalid ones): len(graphs) +
  len(invalid) == len(smiles). Cached per process on the exact sequence of SMILES."""
  graphs, invalid = _featurize_cached(tuple(str(s) for s in smiles))
  return list(graphs), list(invalid)


def _mols(smiles: Sequence[str], what: str) -> list:
  mols = [_parse(text) for text in smiles]
  bad = [i for i, mol in enumerate(mols) if mol is None]
  if bad:
    named = ", ".join(f"{i} ({smiles[i]!r})" for i in bad[:_SHOW])
    raise ConfigError(f"{what}: {len(bad)} invalid SMILES, at positions {named}"
                      f"{', ...' if len(bad) > _SHOW else ''}")
  return mols


def morgan_counts(smiles: Sequence[str], radius: int = 2, bits: int = 2048) -> np.ndarray:
  """float32 [N, bits]: how often each (folded) Morgan environment of radius <= `radius`
  occurs in each molecule (RDKit's count fingerprint). Invalid SMILES are a ConfigError."""
  if radius < 0 or bits < 1:
    raise ConfigError(f"morgan_counts: radius={radius} must be >= 0 and bits={bits} >= 1")
  generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
  counts = np.zeros((len(smiles), bits), np.float32)
  for i, mol in enumerate(_mols(smiles, "morgan_counts")):
    counts[i] = generator.GetCountFingerprintAsNumPy(mol)
  return counts


def scaffold(smiles: str) -> str:
  """The Bemis-Murcko scaffold (ring systems and the linkers between them) as canonical
  SMILES; "" for an acyclic molecule. An invalid SMILES is a ConfigError."""
  (mol,) = _mols([smiles], "scaffold")
  return MurckoScaffold.MurckoScaffoldSmiles(mol=mol)
