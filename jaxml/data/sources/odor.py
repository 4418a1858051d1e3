"""Odour descriptors of molecules (GoodScents + Leffingwell): multi-label graph classification.

Source `odor`: the 4,983 molecules of the Principal Odor Map paper (Lee et al., Science 2023;
openpom's curated GoodScents + Leffingwell merge, shipped in `jaxml/data/files/odor/`, see the
README there), each labelled with which of 138 odour descriptors ("fruity", "musk", ...)
perfumers use for it. `odor:<path>` reads a user's CSV (plain or .gz) instead: a SMILES
column `nonStereoSMILES` or `smiles`, an optional free-text `descriptors` column (ignored),
and every other column a 0/1 label. A row RDKit cannot parse is skipped with a warning naming
its line; a malformed file (no SMILES column, a label that is not 0/1, a ragged row) is one
ConfigError naming the file and line.

There is no official split; the paper cross-validates, so `data.folds` folds are drawn and
fold `data.fold` is the test split, the others train. `data.split`:

- "stratified" (default): iterative stratification over the labels (jaxml.data.
  multilabel_split), so even the rarest descriptor (31 molecules) has positives in every fold;
- "scaffold": whole Bemis-Murcko scaffold groups per fold, testing on unseen ring systems.

Folds are drawn over the molecules kept (valid, and within `data.max_atoms`), and fold sizes
differ by at most one (997 or 996 test molecules of the shipped 4,983 for the stratified
split).

Examples are graphs in the layout of `jaxml.data.base` (heavy atoms, featurised by
`jaxml.data.molecules`): `nodes` [max_nodes, 36] f32, `node_mask` [max_nodes] f32,
`edge_index` [max_edges, 2] int32, `edges` [max_edges, 6] f32, `edge_mask` [max_edges] f32;
the target `labels` [L] int32 (0/1; its categories name the descriptors); and `molecule`
int32, the example's row of `molecule_table(...)[0]`, so a study can map a prediction back
to its SMILES or Morgan fingerprint. The shipped data's largest molecule (vitamin B12, 92
heavy atoms, 194 directed edges) sets the padding for all; 99% have at most 28 atoms, and
`data.max_atoms` = 30 drops 34 molecules and shrinks every example about threefold (30 nodes
and 66 edges).

Config (all optional): `split` ("stratified"), `folds` (5), `fold` (0), `split_seed` (0),
`max_atoms` (0 = no cap; else molecules with more heavy atoms are skipped, with a warning,
and max_nodes = max_atoms), `drop_labels` (() = none: descriptor names left out of the target,
for the few-label transfer experiment; the molecules and folds stay those of all labels, so
a network trained without them is tested on the very same split). The fingerprint baselines
call `molecule_table(data_config)` to get exactly the molecules and split a graph network
trains on.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import numbers
import os
import warnings

import numpy as np

from jaxml.data import molecules, multilabel_split, shipped
from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

NAME = "odor"
FILE = "curated_GS_LF_merged_4983.csv"
SMILES_COLUMNS = ("nonStereoSMILES", "smiles")
TEXT_COLUMN = "descriptors"  # the labels as text ("fruity;green"): the 0/1 columns repeat it
SPLITS = ("stratified", "scaffold")
DEFAULTS = {"split": "stratified", "folds": 5, "fold": 0, "split_seed": 0, "max_atoms": 0,
            "drop_labels": ()}
INPUTS = ("nodes", "node_mask", "edge_index", "edges", "edge_mask")
_SHOW = 5  # skipped rows named in a warning


@dataclasses.dataclass(frozen=True)
class MoleculeTable:
  """Molecules and their labels. smiles: [N]; labels: int32 [N, L] of 0/1; descriptors: the
  L label names (the CSV's label columns, in file order)."""

  smiles: tuple[str, ...]
  labels: np.ndarray
  descriptors: tuple[str, ...]

  def take(self, rows: np.ndarray) -> MoleculeTable:
    return MoleculeTable(tuple(self.smiles[i] for i in rows), self.labels[rows],
                         self.descriptors)


def read_text(path: str = "") -> tuple[str, str]:
  """(where, text) of the user's CSV at `path` (plain or .gz), else of the shipped one."""
  if not path:
    return shipped.read_text(NAME, FILE, "", f"{FILE}.gz")
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ConfigError(f"{NAME}: {path} is not a file (source 'odor:<path to a CSV>')")
  return shipped.read_text(NAME, os.path.basename(path), os.path.dirname(path) or ".")


def _parse(path: str) -> tuple[str, MoleculeTable, list[int]]:
  """(where, every row as a MoleculeTable, each row's line in the file), SMILES unchecked."""
  where, text = read_text(path)
  reader = csv.reader(io.StringIO(text))
  header = [name.strip() for name in next(reader, [])]
  found = [c for c in SMILES_COLUMNS if c in header]
  if len(found) != 1:
    raise ConfigError(f"{NAME}: {where} needs one SMILES column, {' or '.join(SMILES_COLUMNS)}"
                      f"; its header has {found or 'neither'}")
  names = [c for c in header if c not in (found[0], TEXT_COLUMN)]
  if not names:
    raise ConfigError(f"{NAME}: {where} has no label columns besides {found[0]!r}")
  smiles_at, label_at = header.index(found[0]), [header.index(c) for c in names]
  smiles, rows, lines = [], [], []
  for row in reader:
    if not row:
      continue
    if len(row) != len(header):
      raise ConfigError(f"{NAME}: {where}:{reader.line_num} has {len(row)} values, not "
                        f"{len(header)}")
    smiles.append(row[smiles_at].strip())
    rows.append([row[i].strip() for i in label_at])
    lines.append(reader.line_num)
  if not rows:
    raise ConfigError(f"{NAME}: {where} holds no rows")
  values = np.array(rows)  # one string array of the labels only: SMILES would widen every cell
  ones = values == "1"
  bad = np.argwhere(~ones & (values != "0"))  # (np.isin on strings is 30x slower)
  if len(bad):
    row, column = bad[0]
    raise ConfigError(f"{NAME}: {where}:{lines[row]} has {str(values[row, column])!r} in label "
                      f"column {names[column]!r}, not 0 or 1")
  return where, MoleculeTable(tuple(smiles), ones.astype(np.int32), tuple(names)), lines


def _read(path: str) -> tuple[MoleculeTable, list[molecules.MoleculeGraph]]:
  """The molecules RDKit can parse, with their graphs; the others skipped with a warning."""
  where, table, lines = _parse(path)
  graphs, invalid = molecules.featurize_all(table.smiles)
  if not graphs:
    raise ConfigError(f"{NAME}: {where}: none of its {len(lines)} SMILES is valid (line "
                      f"{lines[0]}: {table.smiles[0]!r})")
  if invalid:
    named = ", ".join(f"line {lines[i]} ({table.smiles[i]!r})" for i in invalid[:_SHOW])
    warnings.warn(f"{NAME}: {where}: skipped {len(invalid)} of {len(lines)} rows whose SMILES "
                  f"RDKit cannot parse: {named}{', ...' if len(invalid) > _SHOW else ''}",
                  stacklevel=3)
  return table.take(np.setdiff1d(np.arange(len(lines)), invalid)), graphs


def read_table(path: str = "") -> MoleculeTable:
  """The valid molecules of the user's CSV at `path`, else of the shipped file."""
  return _read(path)[0]


def _integer(data_config, key: str, least: int) -> int:
  value = data_config.get(key, DEFAULTS[key])
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
    raise ConfigError(f"{NAME}: data.{key}={value!r} must be an integer >= {least}")
  return int(value)


def _settings(data_config) -> dict:
  split = data_config.get("split", DEFAULTS["split"])
  if split not in SPLITS:
    raise ConfigError(f"{NAME}: data.split={split!r}: choose one of {', '.join(SPLITS)}")
  settings = {"split": split, "folds": _integer(data_config, "folds", 2),
              **{key: _integer(data_config, key, 0) for key in ("fold", "split_seed",
                                                                 "max_atoms")}}
  if settings["fold"] >= settings["folds"]:
    raise ConfigError(f"{NAME}: data.fold={settings['fold']} must be below data.folds="
                      f"{settings['folds']} (folds are 0..{settings['folds'] - 1})")
  return settings


def _prepare(data_config):
  """(kept table, their graphs, train rows, test rows, max_nodes), config checked first."""
  settings = _settings(data_config)
  table, graphs = _read(data_config.source.partition(":")[2])
  max_atoms = settings["max_atoms"]
  if max_atoms:
    small = np.array([graph.num_nodes <= max_atoms for graph in graphs])
    if not small.any():
      raise ConfigError(f"{NAME}: data.max_atoms={max_atoms} leaves none of the "
                        f"{len(graphs)} molecules (the smallest has "
                        f"{min(g.num_nodes for g in graphs)} heavy atoms)")
    if not small.all():
      warnings.warn(f"{NAME}: data.max_atoms={max_atoms} skips {np.count_nonzero(~small)} of "
                    f"{len(graphs)} molecules, those with more heavy atoms", stacklevel=3)
      kept = np.flatnonzero(small)
      table, graphs = table.take(kept), [graphs[i] for i in kept]
  folds, fold, seed = settings["folds"], settings["fold"], settings["split_seed"]
  try:
    if settings["split"] == "scaffold":
      train, test = multilabel_split.scaffold_split(table.smiles, folds, fold, seed)
    else:
      train, test = multilabel_split.kfold(table.labels, folds, fold, seed)
  except ConfigError as err:  # e.g. more folds than molecules or scaffold groups
    raise ConfigError(f"{NAME}: data.split={settings['split']!r}: {err}") from None
  max_nodes = max_atoms or max(graph.num_nodes for graph in graphs)
  return table, graphs, train, test, max_nodes


def molecule_table(data_config) -> tuple[MoleculeTable, np.ndarray, np.ndarray]:
  """(the molecules `load` keeps, train rows, test rows): the same molecules and split as
  `load(data_config)`, for models that read SMILES or fingerprints instead of graphs."""
  table, _, train, test, _ = _prepare(data_config)
  return table, train, test


def kept_labels(data_config, descriptors) -> np.ndarray:
  """The label columns `load(data_config)` keeps: all but `data.drop_labels` (descriptor
  names), in their order; a ConfigError for a name the data lacks or for dropping them all."""
  drop = data_config.get("drop_labels", DEFAULTS["drop_labels"])
  if isinstance(drop, str) or not all(isinstance(name, str) for name in drop):
    raise ConfigError(f"{NAME}: data.drop_labels={drop!r} must be a tuple of descriptor names")
  unknown = sorted(set(drop) - set(descriptors))
  if unknown:
    raise ConfigError(f"{NAME}: data.drop_labels names {unknown}, which the data lacks "
                      f"(its descriptors: {', '.join(descriptors[:5])}, ...)")
  kept = np.array([i for i, name in enumerate(descriptors) if name not in set(drop)], np.int64)
  if not len(kept):
    raise ConfigError(f"{NAME}: data.drop_labels drops all {len(descriptors)} descriptors")
  return kept


def load(data_config) -> Dataset:
  table, graphs, train, test, max_nodes = _prepare(data_config)
  kept = kept_labels(data_config, table.descriptors)
  descriptors = tuple(table.descriptors[i] for i in kept)
  max_edges = max(graph.num_edges for graph in graphs)
  labels = table.labels[:, kept].astype(np.int32)
  splits = {}
  for name, rows in (("train", train), ("test", test)):
    arrays = molecules.pad([graphs[i] for i in rows], max_nodes, max_edges)
    splits[name] = ArraySplit({**arrays, "labels": labels[rows],
                               "molecule": rows.astype(np.int32)})
  fields = {"nodes": Field((max_nodes, molecules.NODE_FEATURES), "float32"),
            "node_mask": Field((max_nodes,), "float32"),
            "edge_index": Field((max_edges, 2), "int32"),
            "edges": Field((max_edges, molecules.EDGE_FEATURES), "float32"),
            "edge_mask": Field((max_edges,), "float32"),
            "labels": Field((len(descriptors),), "int32", descriptors),
            "molecule": Field((), "int32")}
  task = Task("multilabel", inputs=INPUTS, target="labels",
              num_classes=len(descriptors))
  return Dataset(splits["train"], splits["test"], fields, task, name=NAME)
