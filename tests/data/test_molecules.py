"""Molecule graphs, padding, fingerprints and scaffolds, against hand-counted molecules."""

import subprocess
import sys

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from jaxml.data import molecules
from jaxml.errors import ConfigError
from tests.launch_utils import REPO

ONE_HOT = sum(len(values) for _, values in molecules.NODE_GROUPS)  # columns before the flags
VANILLIN = "O=Cc1ccc(O)c(OC)c1"


def node(*names: str) -> np.ndarray:
  return np.isin(molecules.NODE_FEATURE_NAMES, names).astype(np.float32)


def edge(*names: str) -> np.ndarray:
  return np.isin(molecules.EDGE_FEATURE_NAMES, names).astype(np.float32)


def atom(element, degree, hydrogens, hybridisation, *flags, charge="0"):
  return node(f"element={element}", f"degree={degree}", f"charge={charge}",
              f"hydrogens={hydrogens}", f"hybridisation={hybridisation}", *flags)


def graph(smiles: str) -> molecules.MoleculeGraph:
  result = molecules.featurize(smiles)
  assert result is not None
  return result


def test_the_feature_layout():
  names = molecules.NODE_FEATURE_NAMES
  assert (molecules.NODE_FEATURES, molecules.EDGE_FEATURES) == (36, 6)
  assert len(names) == len(set(names)) == 36
  assert names[:13] == ("element=C", "element=N", "element=O", "element=S", "element=F",
                        "element=Cl", "element=Br", "element=I", "element=P", "element=Si",
                        "element=B", "element=Se", "element=other")
  assert names[13:19] == ("degree=0", "degree=1", "degree=2", "degree=3", "degree=4",
                          "degree=5+")
  assert names[19:23] == ("charge=-1", "charge=0", "charge=+1", "charge=other")
  assert names[23:28] == ("hydrogens=0", "hydrogens=1", "hydrogens=2", "hydrogens=3",
                          "hydrogens=4+")
  assert names[28:] == ("hybridisation=SP", "hybridisation=SP2", "hybridisation=SP3",
                        "hybridisation=SP3D", "hybridisation=SP3D2", "hybridisation=other",
                        "aromatic", "in_ring")
  assert molecules.EDGE_FEATURE_NAMES == ("bond=single", "bond=double", "bond=triple",
                                          "bond=aromatic", "conjugated", "in_ring")


def test_ethanol():
  g = graph("CCO")
  assert g.nodes.dtype == np.float32 and g.edges.dtype == np.float32
  assert g.edge_index.dtype == np.int32
  np.testing.assert_array_equal(g.nodes, [atom("C", 1, 3, "SP3"), atom("C", 2, 2, "SP3"),
                                          atom("O", 1, 1, "SP3")])
  np.testing.assert_array_equal(g.edge_index, [[0, 1], [1, 0], [1, 2], [2, 1]])
  np.testing.assert_array_equal(g.edges, [edge("bond=single")] * 4)


def test_benzene_is_aromatic_and_in_a_ring_throughout():
  g = graph("c1ccccc1")
  assert (g.num_nodes, g.num_edges) == (6, 12)
  np.testing.assert_array_equal(g.nodes, [atom("C", 2, 1, "SP2", "aromatic", "in_ring")] * 6)
  np.testing.assert_array_equal(g.edges, [edge("bond=aromatic", "conjugated", "in_ring")] * 12)


def test_vanillin():
  g = graph(VANILLIN)  # O=C(H)-ring; ring atoms 2,3,4,5,7,10; OH at 5 (O6), OCH3 at 7 (O8, C9)
  ring = ("aromatic", "in_ring")
  # RDKit's convention: an oxygen whose lone pair sits next to the ring (O6, O8) is SP2, and
  # its bond to the ring is conjugated; the methyl's bond to O8 is not.
  np.testing.assert_array_equal(g.nodes, [
      atom("O", 1, 0, "SP2"), atom("C", 2, 1, "SP2"), atom("C", 3, 0, "SP2", *ring),
      atom("C", 2, 1, "SP2", *ring), atom("C", 2, 1, "SP2", *ring),
      atom("C", 3, 0, "SP2", *ring), atom("O", 1, 1, "SP2"), atom("C", 3, 0, "SP2", *ring),
      atom("O", 2, 0, "SP2"), atom("C", 1, 3, "SP3"), atom("C", 2, 1, "SP2", *ring)])
  # 11 heavy atoms and one ring: 11 bonds, 22 directed edges.
  assert g.num_edges == 22
  kinds = g.edges[:, :4].sum(axis=0)
  assert kinds.tolist() == [8, 2, 0, 12]  # 4 single, 1 double (C=O), 6 aromatic bonds, x2
  assert g.edges[:, 4].sum() == 20  # every bond conjugated but O8-C9
  assert g.edges[:, 5].sum() == 12
  assert g.nodes[:, molecules.NODE_FEATURE_NAMES.index("hydrogens=3")].sum() == 1
  hydrogens = g.nodes[:, 23:28] @ np.arange(5)
  assert hydrogens.sum() == 8  # C8H8O3


def test_a_charged_atom():
  g = graph("C[N+](C)(C)C")
  methyl = atom("C", 1, 3, "SP3")
  np.testing.assert_array_equal(g.nodes, [methyl, atom("N", 4, 0, "SP3", charge="+1"), methyl,
                                          methyl, methyl])
  assert g.num_edges == 8
  np.testing.assert_array_equal(g.edges, [edge("bond=single")] * 8)


def test_acetonitrile_has_a_triple_bond_and_sp_atoms():
  g = graph("CC#N")
  np.testing.assert_array_equal(g.nodes, [atom("C", 1, 3, "SP3"), atom("C", 2, 0, "SP"),
                                          atom("N", 1, 0, "SP")])
  np.testing.assert_array_equal(g.edges, [edge("bond=single")] * 2 + [edge("bond=triple")] * 2)


def test_unlisted_elements_charges_and_many_neighbours_share_an_other_column():
  g = graph("[Na+].[Cl-].F[S](F)(F)(F)(F)F.[O-2]")
  names = molecules.NODE_FEATURE_NAMES
  on = [[names[j] for j in np.flatnonzero(row)] for row in g.nodes]
  assert on[0][:3] == ["element=other", "degree=0", "charge=+1"]
  assert on[1][:3] == ["element=Cl", "degree=0", "charge=-1"]
  assert on[3][:3] == ["element=S", "degree=5+", "charge=0"]
  assert on[9][:3] == ["element=O", "degree=0", "charge=other"]


@pytest.mark.parametrize("smiles", ["CCO", "c1ccccc1", VANILLIN, "C[N+](C)(C)C", "CC#N",
                                    "CC(C)C1CCC(C)CC1O", "[Na+].[Cl-]"])
def test_edges_are_symmetric_and_one_hot_groups_sum_to_one(smiles):
  g = graph(smiles)
  assert (g.nodes[:, :ONE_HOT].sum(axis=1) == len(molecules.NODE_GROUPS)).all()
  assert (g.edges[:, :4].sum(axis=1) == 1).all()
  features = {tuple(pair): tuple(row) for pair, row in zip(g.edge_index.tolist(), g.edges)}
  assert len(features) == g.num_edges  # no edge twice
  for (sender, receiver), row in features.items():
    assert features[(receiver, sender)] == row
  mol = Chem.MolFromSmiles(smiles)
  assert (g.num_nodes, g.num_edges) == (mol.GetNumAtoms(), 2 * mol.GetNumBonds())


@pytest.mark.parametrize("smiles", ["C1CC", "xyz", "", "C(C)(C)(C)(C)(C)C"])
def test_invalid_smiles_give_none(smiles):
  assert molecules.featurize(smiles) is None


def test_featurize_all_skips_invalid_rows_and_is_cached():
  smiles = ["CCO", "C1CC", "c1ccccc1", "nonsense"]
  graphs, invalid = molecules.featurize_all(smiles)
  assert invalid == [1, 3]
  assert [g.num_nodes for g in graphs] == [3, 6]
  cache = molecules._featurize_cached  # pylint: disable=protected-access
  before = cache.cache_info().hits
  again, _ = molecules.featurize_all(tuple(smiles))
  assert cache.cache_info().hits == before + 1
  assert again[0] is graphs[0]
  with pytest.raises(ValueError):  # shared by the cache, so read-only
    graphs[0].nodes[0, 0] = 5.0


def test_pad_round_trips_and_marks_the_padding():
  graphs = [graph("CCO"), graph("c1ccccc1"), graph(VANILLIN)]
  arrays = molecules.pad(graphs, max_nodes=12, max_edges=24)
  assert {k: (v.shape, v.dtype.name) for k, v in arrays.items()} == {
      "nodes": ((3, 12, 36), "float32"), "node_mask": ((3, 12), "float32"),
      "edge_index": ((3, 24, 2), "int32"), "edges": ((3, 24, 6), "float32"),
      "edge_mask": ((3, 24), "float32")}
  assert arrays["node_mask"].sum(axis=1).tolist() == [3, 6, 11]
  assert arrays["edge_mask"].sum(axis=1).tolist() == [4, 12, 22]
  for i, g in enumerate(graphs):
    n, e = g.num_nodes, g.num_edges
    np.testing.assert_array_equal(arrays["nodes"][i, :n], g.nodes)
    np.testing.assert_array_equal(arrays["edge_index"][i, :e], g.edge_index)
    np.testing.assert_array_equal(arrays["edges"][i, :e], g.edges)
    assert (arrays["node_mask"][i, :n] == 1).all() and (arrays["edge_mask"][i, :e] == 1).all()
    assert not arrays["nodes"][i, n:].any() and not arrays["edges"][i, e:].any()
    assert not arrays["edge_index"][i, e:].any()  # padded edges point at node 0


def test_pad_refuses_a_graph_over_the_budget():
  with pytest.raises(ConfigError, match="graph 1 has 6 atoms and 12 edges, over the budget"):
    molecules.pad([graph("CCO"), graph("c1ccccc1")], max_nodes=5, max_edges=12)
  assert molecules.pad([], 4, 6)["nodes"].shape == (0, 4, 36)


def test_morgan_counts_of_ethanol_are_its_six_environments():
  # Radius 0: the three atoms. Radius 1: CH3 with its C-C bond, CH2 with both bonds, O with
  # C-O. Radius 2 finds no new bond set (each is CH2's radius-1 set), and RDKit keeps one
  # copy of an environment, so six identifiers, each once.
  counts = molecules.morgan_counts(["CCO"])
  assert counts.dtype == np.float32 and counts.shape == (1, 2048)
  assert counts.sum() == 6 and np.count_nonzero(counts) == 6


def test_morgan_counts_equal_rdkits_unfolded_counts_folded():
  smiles = [VANILLIN, "CC(C)C1CCC(C)CC1O", "CCCCCCCCCC(=O)OCC"]
  counts = molecules.morgan_counts(smiles, radius=3, bits=512)
  generator = rdFingerprintGenerator.GetMorganGenerator(radius=3)
  for i, text in enumerate(smiles):
    folded = np.zeros(512)
    sparse = generator.GetSparseCountFingerprint(Chem.MolFromSmiles(text))
    for identifier, count in sparse.GetNonzeroElements().items():
      folded[identifier % 512] += count
    np.testing.assert_array_equal(counts[i], folded)
  # A chain of ten carbons has repeated environments: counts, not bits.
  assert counts[2].max() > 1


def test_morgan_counts_name_invalid_smiles():
  with pytest.raises(ConfigError, match=r"1 invalid SMILES, at positions 1 \('C1CC'\)"):
    molecules.morgan_counts(["CCO", "C1CC"])
  with pytest.raises(ConfigError, match="radius=-1"):
    molecules.morgan_counts(["CCO"], radius=-1)


@pytest.mark.parametrize("smiles, expected", [
    ("CCO", ""),
    (VANILLIN, "c1ccccc1"),
    ("CC(C)Cc1ccc(cc1)C(C)C(=O)O", "c1ccccc1"),  # ibuprofen
    ("CC(C)C1CCC(C)CC1O", "C1CCCCC1"),  # menthol
    ("c1ccc(Cc2ccccc2)cc1", "c1ccc(Cc2ccccc2)cc1"),  # the linker is part of the scaffold
    ("c1ccc2ccccc2c1", "c1ccc2ccccc2c1"),
])
def test_scaffold(smiles, expected):
  assert molecules.scaffold(smiles) == expected


def test_scaffold_of_an_invalid_smiles_is_a_config_error():
  with pytest.raises(ConfigError, match="scaffold: 1 invalid SMILES"):
    molecules.scaffold("C1CC")


def test_without_rdkit_the_module_says_how_to_install_it():
  code = ("import sys; sys.modules['rdkit'] = None\n"  # makes `import rdkit` fail
          "from jaxml.errors import ConfigError\n"
          "try:\n  import jaxml.data.molecules\nexcept ConfigError as err:\n  print(err)")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip() == "molecules need RDKit: pip install 'jaxml[molecules]'"
