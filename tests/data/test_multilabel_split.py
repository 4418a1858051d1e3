"""Iterative stratification and scaffold splits: partitions, balance, determinism, errors."""

import csv
import gzip
import importlib.resources
import io

import numpy as np
import pytest

from jaxml.data import molecules, multilabel_split
from jaxml.errors import ConfigError

FOLDS = 5


@pytest.fixture(scope="module")
def shipped():
  """(smiles, labels int [4983, 138]) read straight from the shipped file."""
  raw = importlib.resources.files("jaxml.data").joinpath(
      "files/odor/curated_GS_LF_merged_4983.csv.gz").read_bytes()
  rows = list(csv.reader(io.StringIO(gzip.decompress(raw).decode("utf-8"))))[1:]
  return [row[0] for row in rows], np.array([row[2:] for row in rows]).astype(np.int64)


def random_labels(seed=0, count=400, labels=25):
  """Labels of very different frequencies (1% to 40%), as descriptors have."""
  rng = np.random.default_rng(seed)
  return (rng.random((count, labels)) < np.linspace(0.01, 0.4, labels)).astype(np.int64)


def per_fold(labels, fold_of, folds=FOLDS):
  return np.stack([labels[fold_of == k].sum(axis=0) for k in range(folds)])


def proportion_deviation(labels, fold_of, folds=FOLDS):
  """Mean over folds and labels of |label frequency in the fold - in all the data|."""
  overall = labels.mean(axis=0)
  return np.mean([np.abs(labels[fold_of == k].mean(axis=0) - overall) for k in range(folds)])


def test_a_hand_traced_split():
  # Label 0 (2 positives) is rarest: one to each fold. Label 1's four then go two and two.
  labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0, 1]])
  fold_of = multilabel_split.iterative_stratification(labels, 2, seed=3)
  assert per_fold(labels, fold_of, 2).tolist() == [[1, 2], [1, 2]]


def test_unlabelled_examples_fill_the_smallest_folds():
  labels = np.zeros((10, 3), np.int64)
  labels[0, 0] = labels[1, 0] = 1  # placed first, in two different folds
  fold_of = multilabel_split.iterative_stratification(labels, 3, seed=0)
  assert sorted(np.bincount(fold_of, minlength=3).tolist()) == [3, 3, 4]
  assert fold_of[0] != fold_of[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_shipped_table(shipped, seed):
  _, labels = shipped
  fold_of = multilabel_split.iterative_stratification(labels, FOLDS, seed)
  assert fold_of.dtype == np.int64 and fold_of.shape == (4983,)
  assert sorted(np.bincount(fold_of).tolist()) == [996, 996, 997, 997, 997]
  counts = per_fold(labels, fold_of)
  assert (counts > 0).all()  # every descriptor (>= 31 molecules) in every fold
  rarest = np.argmin(labels.sum(axis=0))  # 31 positives: placed first, so 7, 6, 6, 6, 6
  assert sorted(counts[:, rarest].tolist()) == [6, 6, 6, 6, 7]
  random_split = np.random.default_rng(seed).permutation(len(labels)) % FOLDS
  assert proportion_deviation(labels, fold_of) < proportion_deviation(labels, random_split) / 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_labels(seed):
  labels = random_labels(seed)
  fold_of = multilabel_split.iterative_stratification(labels, FOLDS, seed)
  assert np.bincount(fold_of).tolist() == [80] * FOLDS
  counts = per_fold(labels, fold_of)
  assert (counts[:, labels.sum(axis=0) >= FOLDS] > 0).all()
  random_split = np.random.default_rng(seed).permutation(len(labels)) % FOLDS
  assert proportion_deviation(labels, fold_of) < proportion_deviation(labels, random_split)


def test_kfold_partitions_and_is_deterministic():
  labels = random_labels(count=401)  # 401 = 5 * 80 + 1: fold sizes 81, 80, 80, 80, 80
  tests = []
  for fold in range(FOLDS):
    train, test = multilabel_split.kfold(labels, FOLDS, fold, seed=7)
    assert train.dtype == test.dtype == np.int64
    assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()
    assert np.union1d(train, test).tolist() == list(range(401))
    assert len(np.intersect1d(train, test)) == 0
    tests.append(test)
  assert sorted(len(t) for t in tests) == [80, 80, 80, 80, 81]
  assert np.concatenate(tests).size == np.unique(np.concatenate(tests)).size == 401
  again = multilabel_split.kfold(labels, FOLDS, 2, seed=7)[1]
  other = multilabel_split.kfold(labels, FOLDS, 2, seed=8)[1]
  assert again.tolist() == tests[2].tolist() and other.tolist() != tests[2].tolist()


@pytest.mark.parametrize("call, message", [
    (lambda labels: multilabel_split.kfold(labels, 1, 0, 0), "folds=1 must be an integer >= 2"),
    (lambda labels: multilabel_split.kfold(labels, 3, 3, 0), r"fold=3 must be an integer in 0..2"),
    (lambda labels: multilabel_split.kfold(labels, 3, -1, 0), "fold=-1"),
    (lambda labels: multilabel_split.kfold(labels[:2], 3, 0, 0),
     "folds=3 is more than the 2 examples"),
    (lambda labels: multilabel_split.kfold(labels * 2, 3, 0, 0), "only 0 and 1"),
    (lambda labels: multilabel_split.kfold(labels[:, 0], 3, 0, 0), r"shape \(400,\)"),
    (lambda labels: multilabel_split.scaffold_split(["CCO", "CCC"], 3, 0, 0),
     "folds=3 is more than the 2 examples"),
    (lambda labels: multilabel_split.scaffold_split(["c1ccccc1", "Cc1ccccc1"], 2, 0, 0),
     "folds=2 is more than the 1 groups"),
])
def test_bad_arguments(call, message):
  with pytest.raises(ConfigError, match=message):
    call(random_labels())


def test_group_folds_deal_largest_groups_first():
  groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] * 2
  # a -> one fold (5); b -> the other (3); c -> the smaller (5, 5); d -> either: 7 and 5.
  for seed in range(4):
    fold_of = multilabel_split.group_folds(groups, 2, seed)
    for group in "abcd":
      assert len(set(fold_of[np.array(groups) == group].tolist())) == 1
    assert fold_of[0] != fold_of[5] and fold_of[5] == fold_of[8]
    assert sorted(np.bincount(fold_of).tolist()) == [5, 7]


def test_scaffold_split_of_the_shipped_table(shipped):
  smiles, _ = shipped
  fold_of = multilabel_split.scaffold_folds(smiles, FOLDS, seed=0)
  assert sorted(np.bincount(fold_of).tolist()) == [996, 996, 997, 997, 997]
  scaffolds = [molecules.scaffold(text) for text in smiles]
  folds_of_scaffold = {}
  for scaffold, fold in zip(scaffolds, fold_of.tolist()):
    folds_of_scaffold.setdefault(scaffold, set()).add(fold)
  assert len(folds_of_scaffold) == 556  # 555 ring scaffolds and "" (2,236 acyclic molecules)
  assert all(len(folds) == 1 for scaffold, folds in folds_of_scaffold.items() if scaffold)
  assert folds_of_scaffold[""] == set(range(FOLDS))  # acyclic molecules are not one group
  assert np.array_equal(multilabel_split.scaffold_folds(smiles, FOLDS, seed=0), fold_of)
  train, test = multilabel_split.scaffold_split(smiles, FOLDS, 1, seed=0)
  assert test.tolist() == np.flatnonzero(fold_of == 1).tolist()
  assert np.union1d(train, test).size == len(smiles)
  seen_in_train = {scaffolds[i] for i in train} - {""}
  assert not seen_in_train & {scaffolds[i] for i in test}
