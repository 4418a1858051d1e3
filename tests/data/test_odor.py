"""The `odor` source: the shipped table, its graphs and folds, a user's CSV, and bad input."""

import gzip
import os
import warnings

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset, molecules
from jaxml.data.sources import odor
from jaxml.errors import ConfigError

INPUTS = ("nodes", "node_mask", "edge_index", "edges", "edge_mask")


def config(source="odor", **fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"source": source, **fields})


def write(folder, text: str, name="mine.csv") -> str:
  path = os.path.join(folder, name)
  data = text.encode("utf-8")
  with open(path, "wb") as f:
    f.write(gzip.compress(data) if name.endswith(".gz") else data)
  return path


ICOSANOL = "C" * 20 + "O"  # 21 heavy atoms
USER_CSV = f"""smiles,descriptors,sweet,musk
CCO,sweet,1,0
C1CC,musk,0,1
c1ccccc1,sweet;musk,1,1
CC(=O)OCC,sweet,1,0
O=Cc1ccc(O)c(OC)c1,sweet,1,0
{ICOSANOL},musk,0,1
"""


@pytest.fixture(scope="module")
def dataset():
  return load_dataset(config())


def test_the_shipped_table():
  table = odor.read_table()
  assert len(table.smiles) == 4983 and table.labels.shape == (4983, 138)
  assert table.labels.dtype == np.int32
  assert table.descriptors[:3] == ("alcoholic", "aldehydic", "alliaceous")
  assert table.descriptors[-1] == "woody"
  column = {name: int(table.labels[:, table.descriptors.index(name)].sum())
            for name in ("fruity", "green", "musk", "odorless", "chamomile", "woody")}
  assert column == {"fruity": 1902, "green": 1446, "musk": 98, "odorless": 200,
                    "chamomile": 31, "woody": 679}
  assert table.labels.sum() == 24_312
  assert table.smiles[0] == "CC(O)CN"  # fishy
  assert np.flatnonzero(table.labels[0]).tolist() == [table.descriptors.index("fishy")]


def test_the_default_dataset(dataset):
  assert dataset.name == "odor"
  assert (len(dataset.train), len(dataset.test)) == (3986, 997)
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes) == (
      "multilabel", INPUTS, "labels", 138)
  shapes = {name: (spec.shape, spec.dtype) for name, spec in dataset.fields.items()}
  # The largest molecule, vitamin B12 (92 heavy atoms, 97 bonds), sets the padding.
  assert shapes == {"nodes": ((92, 36), "float32"), "node_mask": ((92,), "float32"),
                    "edge_index": ((194, 2), "int32"), "edges": ((194, 6), "float32"),
                    "edge_mask": ((194,), "float32"), "labels": ((138,), "int32"),
                    "molecule": ((), "int32")}


def test_examples_are_their_molecules_graphs(dataset):
  table, train, test = odor.molecule_table(config())
  assert dataset.test.arrays["molecule"].tolist() == test.tolist()
  assert dataset.train.arrays["molecule"].tolist() == train.tolist()
  examples = dataset.test.read(np.array([0, 5]))
  for position, row in enumerate(test[[0, 5]]):
    graph = molecules.featurize(table.smiles[row])
    n, e = graph.num_nodes, graph.num_edges
    assert examples["node_mask"][position].sum() == n
    assert examples["edge_mask"][position].sum() == e
    np.testing.assert_array_equal(examples["nodes"][position, :n], graph.nodes)
    np.testing.assert_array_equal(examples["edges"][position, :e], graph.edges)
    np.testing.assert_array_equal(examples["labels"][position], table.labels[row])


def test_drop_labels_keeps_the_molecules_and_the_split(dataset):
  dropped = ("musk", "fruity")
  smaller = load_dataset(config(drop_labels=dropped))
  names = dataset.fields["labels"].categories
  kept = [i for i, name in enumerate(names) if name not in dropped]
  assert smaller.fields["labels"].categories == tuple(names[i] for i in kept)
  assert smaller.task.num_classes == 136 and smaller.fields["labels"].shape == (136,)
  for split in ("train", "test"):
    full, less = getattr(dataset, split).arrays, getattr(smaller, split).arrays
    np.testing.assert_array_equal(less["molecule"], full["molecule"])
    np.testing.assert_array_equal(less["labels"], full["labels"][:, kept])


@pytest.mark.parametrize("drop, message", [
    (("musk", "smoky-ish"), r"data.drop_labels names \['smoky-ish'\], which the data lacks"),
    ("musk", "data.drop_labels='musk' must be a tuple of descriptor names"),
])
def test_bad_drop_labels(drop, message):
  with pytest.raises(ConfigError, match=message):
    load_dataset(config(drop_labels=drop))


@pytest.mark.filterwarnings("ignore:.*RDKit cannot parse")  # USER_CSV's invalid row
def test_dropping_every_label(tmp_path):
  path = write(tmp_path, USER_CSV)
  with pytest.raises(ConfigError, match="data.drop_labels drops all 2 descriptors"):
    load_dataset(config(f"odor:{path}", drop_labels=("sweet", "musk"), folds=2))


@pytest.mark.parametrize("fold, sizes", [(0, (3986, 997)), (3, (3987, 996))])
def test_folds(fold, sizes):
  table, train, test = odor.molecule_table(config(fold=fold))
  assert (len(train), len(test)) == sizes
  assert np.union1d(train, test).size == len(table.smiles) == 4983


def test_max_atoms_and_a_scaffold_split():
  with pytest.warns(UserWarning, match="data.max_atoms=30 skips 34 of 4983 molecules"):
    dataset = load_dataset(config(split="scaffold", max_atoms=30, fold=3))
  assert (len(dataset.train), len(dataset.test)) == (3959, 990)
  assert dataset.fields["nodes"].shape == (30, 36)
  assert dataset.fields["edge_index"].shape == (66, 2)  # the largest kept molecule's edges
  atoms = [split.arrays["node_mask"].sum(axis=1) for split in (dataset.train, dataset.test)]
  assert max(a.max() for a in atoms) == 30
  with pytest.warns(UserWarning):
    table, train, test = odor.molecule_table(config(split="scaffold", max_atoms=30, fold=3))
  assert len(table.smiles) == 4949
  assert dataset.test.arrays["molecule"].tolist() == test.tolist()
  scaffolds = [molecules.scaffold(text) for text in table.smiles]
  train_scaffolds = {scaffolds[i] for i in train} - {""}
  assert not train_scaffolds & {scaffolds[i] for i in test}


def test_a_user_csv_skips_an_invalid_smiles(tmp_path):
  path = write(tmp_path, USER_CSV, "mine.csv.gz")
  with pytest.warns(UserWarning, match=r"skipped 1 of 6 rows .* line 3 \('C1CC'\)"):
    table = odor.read_table(path)
  assert table.smiles == ("CCO", "c1ccccc1", "CC(=O)OCC", "O=Cc1ccc(O)c(OC)c1", ICOSANOL)
  assert table.descriptors == ("sweet", "musk")
  assert table.labels.tolist() == [[1, 0], [1, 1], [1, 0], [1, 0], [0, 1]]
  with pytest.warns(UserWarning, match="line 3"):
    dataset = load_dataset(config(f"odor:{path}", folds=2, fold=1))
  assert len(dataset.train) + len(dataset.test) == 5
  assert dataset.fields["nodes"].shape == (21, 36)
  assert dataset.fields["edges"].shape == (40, 6)  # icosanol's 20 bonds, both ways
  assert dataset.task.num_classes == 2


def test_max_atoms_on_a_user_csv(tmp_path):
  path = write(tmp_path, USER_CSV)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    dataset = load_dataset(config(f"odor:{path}", folds=2, max_atoms=11))
    with pytest.raises(ConfigError, match=r"data.max_atoms=2 leaves none of the 5 molecules "
                       r"\(the smallest has 3 heavy atoms\)"):
      odor.molecule_table(config(f"odor:{path}", folds=2, max_atoms=2))
  assert len(dataset.train) + len(dataset.test) == 4  # icosanol dropped
  assert dataset.fields["nodes"].shape == (11, 36)
  assert dataset.fields["edges"].shape == (22, 6)  # vanillin's 11 bonds


@pytest.mark.parametrize("text, message", [
    ("smiles,a\nC1CC,1\nxyz,0\n", r"none of its 2 SMILES is valid \(line 2: 'C1CC'\)"),
    ("name,a\nCCO,1\n", "needs one SMILES column, nonStereoSMILES or smiles; its header has "
     "neither"),
    ("smiles,nonStereoSMILES,a\nCCO,CCO,1\n", "needs one SMILES column"),
    ("smiles,descriptors\nCCO,x\n", "has no label columns besides 'smiles'"),
    ("smiles,a,b\nCCO,1,0\nCCC,0,2\n", r"mine.csv:3 has '2' in label column 'b', not 0 or 1"),
    ("smiles,a,b\nCCO,1,0\nCCC,0\n", r"mine.csv:3 has 2 values, not 3"),
    ("smiles,a\n", "holds no rows"),
])
def test_bad_csv(tmp_path, text, message):
  path = write(tmp_path, text)
  with pytest.raises(ConfigError, match=message):
    odor.read_table(path)


def test_a_missing_file(tmp_path):
  with pytest.raises(ConfigError, match="is not a file"):
    load_dataset(config(f"odor:{tmp_path}/absent.csv"))


@pytest.mark.parametrize("fields, message", [
    ({"split": "random"}, "data.split='random': choose one of stratified, scaffold"),
    ({"folds": 1}, "data.folds=1 must be an integer >= 2"),
    ({"folds": True}, "data.folds=True must be an integer"),
    ({"fold": 5}, r"data.fold=5 must be below data.folds=5 \(folds are 0..4\)"),
    ({"fold": "0"}, "data.fold='0' must be an integer >= 0"),
    ({"split_seed": -1}, "data.split_seed=-1 must be an integer >= 0"),
    ({"max_atoms": -3}, "data.max_atoms=-3 must be an integer >= 0"),
    ({"folds": 5000}, "data.split='stratified': folds=5000 is more than the 4983 examples"),
])
def test_bad_config(fields, message):
  with pytest.raises(ConfigError, match=message):
    load_dataset(config(**fields))
