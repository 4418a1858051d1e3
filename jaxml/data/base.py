"""What a data source returns: random-access splits of examples, and what the examples are.

Every source, bundled, TFDS, shipped file, generated or environment-collected, returns a
`Dataset`: train and test splits that read any set of example indices as one batched dict of
NumPy arrays, plus a description of those dicts. Random access is what makes the data order a
pure function of (seed, step), and so makes resume exact.

The description has two parts, so that algorithms, the runner and evaluators read field names
from it instead of assuming literals:

- `fields`: name -> `Field(shape, dtype)`, the per-example shape (no batch dim) and dtype of
  every array that `split.read` returns; `read` returns exactly these keys. The pipeline adds
  `mask` to batches, so no source may name a field `mask`.
- `task`: what the examples are for. `Task.kind` is "classification" (integer scalar target),
  "multilabel" (a [num_classes] 0/1 target), "regression" (a float target), "partition" (a
  per-step integer label sequence whose label names mean nothing, scored up to relabelling:
  who spoke when in speaker diarization; `Task.step_mask` names its sequence's step mask) or
  "none" (sequences and offline-RL windows: no single target). `inputs` names the default model
  input(s); `groups` names group-attribute fields (e.g. sex, race) for fairness metrics;
  `timestamp` names a field giving each example's time, for time-ordered splits; `weight`
  names a float field of example weights, for a published distribution given as weighted
  rows (FICO): fairness analyses read it, training does not apply it.

`load_dataset` holds every split to this description (`jaxml.data.check`: dtypes, shapes,
finite floats, non-empty splits, labels within the classes) before anything compiles.

Layouts for examples that are not fixed-size tensors. Everything is padded to static shapes so
a jitted step compiles once; the padding is marked, never guessed from values:

- Sequences: a field [max_len, ...] padded with zeros, plus either an int32 `<name>_length`
  scalar or a float32 [max_len] mask (1 for real steps). Windows over episodes (`episodes:`,
  `rlu_atari`, `babyai:`) lead every per-step field with the window axis and mark padding with
  `step_mask` / `action_mask`.
- Graphs (molecules): per example, node features `nodes` [max_nodes, F] float32 with
  `node_mask` [max_nodes] float32; edges as `edge_index` [max_edges, 2] int32 pairs of node
  indices (sender, receiver; padded edges point at node 0 and are masked) with edge features
  `edges` [max_edges, E] float32 and `edge_mask` [max_edges] float32. `max_nodes` and
  `max_edges` are the data set's budget (the largest graph, or a chosen cap that drops larger
  ones), fixed per data set so every batch has one shape; message passing sums with
  `jax.ops.segment_sum` over the flattened batch, multiplying by the masks.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from jaxml.errors import ConfigError

TASK_KINDS = ("classification", "multilabel", "regression", "partition", "none")
RESERVED_FIELDS = ("mask",)  # the pipeline adds these to batches


class Split(Protocol):
  """A random-access collection of examples."""

  def __len__(self) -> int:
    ...

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Returns the examples at `indices`, stacked: each value has leading dim len(indices)."""
    ...


@dataclasses.dataclass(frozen=True)
class ArraySplit:
  """A split held in memory as equal-length NumPy arrays (generated or collected data)."""

  arrays: Mapping[str, np.ndarray]

  def __post_init__(self):
    if not self.arrays:
      raise ConfigError("an ArraySplit needs at least one array")
    lengths = {k: len(v) for k, v in self.arrays.items()}
    if len(set(lengths.values())) != 1:
      counts = ", ".join(f"{k!r} {n}" for k, n in lengths.items())
      raise ConfigError(f"split fields hold different numbers of examples: {counts}")

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in self.arrays.items()}


@dataclasses.dataclass(frozen=True)
class Field:
  """One array of every example: its shape without the batch dim, and its NumPy dtype name.

  `categories` names the values 0..k-1 of an integer field (class names, group names), so
  reports can say "Female" rather than 0; on a multi-label target [L] it names the L labels
  (e.g. odour descriptors), whose values are 0/1.
  """

  shape: tuple[int, ...]
  dtype: str
  categories: tuple[str, ...] = ()

  def __post_init__(self):
    shape = tuple(int(d) for d in self.shape)
    if any(d < 0 for d in shape):
      raise ConfigError(f"Field shape {shape} must be fixed sizes >= 0 (pad variable lengths)")
    try:
      dtype = np.dtype(self.dtype).name
    except TypeError:
      raise ConfigError(f"Field dtype {self.dtype!r} is not a NumPy dtype") from None
    categories = tuple(str(c) for c in self.categories)
    if categories and not np.issubdtype(dtype, np.integer):
      raise ConfigError(f"Field with categories must be an integer field, not {dtype}")
    object.__setattr__(self, "shape", shape)
    object.__setattr__(self, "dtype", dtype)  # canonical: "float32", "int32", "bool", ...
    object.__setattr__(self, "categories", categories)

  @property
  def is_integer_scalar(self) -> bool:
    return self.shape == () and np.issubdtype(self.dtype, np.integer)


def _names(value) -> tuple[str, ...]:
  return (value,) if isinstance(value, str) else tuple(value)


@dataclasses.dataclass(frozen=True)
class Task:
  """What the examples are for; every name is a key of the dataset's `fields`.

  kind:        one of TASK_KINDS.
  inputs:      the default model input field(s), e.g. ("image",) or ("features",).
  target:      the field to predict; None for kind "none".
  num_classes: classes (classification), labels (multilabel), 0 (regression, none).
  groups:      integer scalar group-attribute fields (fairness metrics report per group).
  timestamp:   a scalar field giving each example's time, or None.
  weight:      a float scalar field of example weights (a published distribution given as
               weighted rows), or None; training does not apply weights, so the runner
               refuses to train on a weighted data set.
  step_mask:   for a "partition" task (and only there), the float32 [max_len] field marking
               the real steps of the target sequence [max_len]; its labels are >= 0, numbered
               in any way (only which steps share a label counts).
  """

  kind: str
  inputs: tuple[str, ...]
  target: str | None
  num_classes: int
  groups: tuple[str, ...] = ()
  timestamp: str | None = None
  weight: str | None = None
  step_mask: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "inputs", _names(self.inputs))
    object.__setattr__(self, "groups", _names(self.groups))
    object.__setattr__(self, "num_classes", int(self.num_classes))
    if self.kind not in TASK_KINDS:
      raise ConfigError(f"Task kind {self.kind!r}: choose one of {', '.join(TASK_KINDS)}")
    if not self.inputs:
      raise ConfigError("Task needs at least one input field")
    if (self.target is None) != (self.kind == "none"):
      raise ConfigError(f"a {self.kind!r} task {'needs' if self.target is None else 'has no'} "
                        f"target field (got target={self.target!r})")
    if (self.step_mask is None) != (self.kind != "partition"):
      raise ConfigError(f"a {self.kind!r} task "
                        f"{'needs' if self.kind == 'partition' else 'has no'} step_mask field "
                        f"(got step_mask={self.step_mask!r})")
    labelled = self.kind in ("classification", "multilabel")
    if (self.num_classes < 1) if labelled else (self.num_classes != 0):
      raise ConfigError(f"a {self.kind!r} task cannot have num_classes={self.num_classes} "
                        "(classes or labels >= 1 when classifying, else 0)")

  def fields_used(self) -> tuple[str, ...]:
    names = (*self.inputs, self.target, *self.groups, self.timestamp, self.weight,
             self.step_mask)
    return tuple(name for name in names if name is not None)


def check_task(fields: Mapping[str, Field], task: Task, name: str = "") -> None:
  """Raises ConfigError unless `task` fits `fields` (names exist, targets have their shape)."""
  where = f"dataset {name!r}" if name else "dataset"
  reserved = [f for f in fields if f in RESERVED_FIELDS]
  if reserved:
    raise ConfigError(f"{where}: field names {reserved} are reserved for the pipeline")
  bad = [f for f, spec in fields.items() if not isinstance(spec, Field)]
  if bad:
    raise ConfigError(f"{where}: fields {bad} are not jaxml.data.Field")
  missing = [f for f in task.fields_used() if f not in fields]
  if missing:
    raise ConfigError(f"{where}: task names fields {missing} that it does not have (fields: "
                      f"{', '.join(fields)})")
  target = fields[task.target] if task.target is not None else None
  if task.kind == "classification":
    if not target.is_integer_scalar:
      raise ConfigError(f"{where}: classification target {task.target!r} must be an integer "
                        f"scalar, got shape {target.shape} dtype {target.dtype}")
    if target.categories and len(target.categories) != task.num_classes:
      raise ConfigError(f"{where}: target {task.target!r} names {len(target.categories)} "
                        f"classes but the task has num_classes={task.num_classes}")
  elif task.kind == "multilabel" and target.shape != (task.num_classes,):
    raise ConfigError(f"{where}: multilabel target {task.target!r} must have shape "
                      f"({task.num_classes},), got {target.shape}")
  elif task.kind == "multilabel" and target.categories and (
      len(target.categories) != task.num_classes):
    raise ConfigError(f"{where}: multilabel target {task.target!r} names "
                      f"{len(target.categories)} labels but the task has "
                      f"num_classes={task.num_classes}")
  elif task.kind == "partition" and (
      len(target.shape) != 1 or not np.issubdtype(target.dtype, np.integer)
      or fields[task.step_mask].shape != target.shape
      or not np.issubdtype(fields[task.step_mask].dtype, np.floating)):
    raise ConfigError(f"{where}: partition target {task.target!r} must be an integer "
                      f"sequence [max_len] with a float step mask {task.step_mask!r} of the "
                      f"same shape, got {target.shape} {target.dtype} and "
                      f"{fields[task.step_mask].shape} {fields[task.step_mask].dtype}")
  elif task.kind == "regression" and not np.issubdtype(target.dtype, np.floating):
    raise ConfigError(f"{where}: regression target {task.target!r} must be float, got "
                      f"{target.dtype}")
  not_groups = [g for g in task.groups if not fields[g].is_integer_scalar]
  if not_groups:
    raise ConfigError(f"{where}: group fields {not_groups} must be integer scalars")
  if task.timestamp is not None and fields[task.timestamp].shape != ():
    raise ConfigError(f"{where}: timestamp {task.timestamp!r} must be a scalar field")
  weight = fields[task.weight] if task.weight is not None else None
  if weight is not None and (weight.shape != () or not np.issubdtype(weight.dtype, np.floating)):
    raise ConfigError(f"{where}: weight {task.weight!r} must be a float scalar field, got "
                      f"shape {weight.shape} dtype {weight.dtype}")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test splits plus the description of their examples (see the module doc)."""

  train: Split
  test: Split
  fields: Mapping[str, Field]
  task: Task
  name: str = ""

  def __post_init__(self):
    # Read-only, so a dataset passed around cannot have its description changed under it.
    object.__setattr__(self, "fields", types.MappingProxyType(dict(self.fields)))
    if not isinstance(self.task, Task):
      raise ConfigError(f"dataset {self.name!r}: task must be a jaxml.data.Task")
    check_task(self.fields, self.task, self.name)

  @property
  def num_classes(self) -> int:
    """`task.num_classes`; kept for algorithms written before `task` existed."""
    return self.task.num_classes


def image_classification(train: Split, test: Split, image_shape, num_classes: int,
                         name: str = "", class_names=()) -> Dataset:
  """A dataset of float32 `image` [H, W, C] in [0, 1] and int32 `label` examples."""
  fields = {"image": Field(tuple(image_shape), "float32"),
            "label": Field((), "int32", tuple(class_names))}
  return Dataset(train, test, fields, Task("classification", ("image",), "label", num_classes),
                 name)


def _classification_target(dataset: Dataset, what: str) -> str:
  if dataset.task.kind != "classification":
    raise ConfigError(f"{what} needs a classification dataset; {dataset.name!r} is a "
                      f"{dataset.task.kind!r} task")
  return dataset.task.target


def check_labels(dataset: Dataset, num_classes: int) -> None:
  """Raises ConfigError unless every label fits `num_classes` (in-memory splits are scanned)."""
  target = _classification_target(dataset, "a classifier")
  if num_classes < dataset.num_classes:
    raise ConfigError(f"labels out of range: dataset {dataset.name!r} has "
                      f"{dataset.num_classes} classes but the model has {num_classes}")
  for name, split in (("train", dataset.train), ("test", dataset.test)):
    if isinstance(split, ArraySplit) and target in split.arrays:
      labels = np.asarray(split.arrays[target])
      if labels.min() < 0 or labels.max() >= num_classes:
        raise ConfigError(f"labels out of range: {name} labels span [{labels.min()}, "
                          f"{labels.max()}] but the model has {num_classes} classes")


@dataclasses.dataclass(frozen=True)
class ClassSubsetSplit:
  """The examples of `split` at `indices`, `target` renumbered by `relabel` (old -> new)."""

  split: Split
  indices: np.ndarray
  relabel: np.ndarray  # relabel[old_label] = new label (-1 for dropped classes)
  target: str = "label"

  def __len__(self) -> int:
    return len(self.indices)

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    examples = self.split.read(self.indices[np.asarray(indices)])
    return {**examples, self.target: self.relabel[examples[self.target]].astype(np.int32)}


def labels_of(split: Split, target: str = "label", chunk: int = 4096) -> np.ndarray:
  """Every `target` of `split` (in-memory splits directly; others are read in chunks)."""
  if isinstance(split, ArraySplit):
    return np.asarray(split.arrays[target])
  return np.concatenate([split.read(np.arange(start, min(start + chunk, len(split))))[target]
                         for start in range(0, len(split), chunk)])


def select_classes(dataset: Dataset, classes) -> Dataset:
  """The examples of `classes` only, relabelled 0..len(classes)-1 in the order given.

  This is how one source is split into disjoint tasks, e.g. a "public" pre-training task on
  digits 0-4 and a "private" one on digits 5-9. Splits that are not in memory are scanned
  once for their labels.
  """
  target = _classification_target(dataset, "data.classes")
  classes = [int(c) for c in classes]
  if len(set(classes)) != len(classes) or not classes:
    raise ConfigError(f"data.classes={classes} must be distinct class ids")
  bad = [c for c in classes if not 0 <= c < dataset.num_classes]
  if bad:
    raise ConfigError(f"data.classes has {bad}, outside dataset {dataset.name!r}'s classes "
                      f"0..{dataset.num_classes - 1}")
  relabel = np.full(dataset.num_classes, -1, np.int64)
  relabel[classes] = np.arange(len(classes))
  splits = {}
  for name in ("train", "test"):
    split = getattr(dataset, name)
    keep = np.flatnonzero(relabel[labels_of(split, target)] >= 0)
    if keep.size == 0:
      raise ConfigError(f"data.classes={classes} leaves no {name} examples")
    splits[name] = ClassSubsetSplit(split, keep, relabel, target)
  spec = dataset.fields[target]
  names = tuple(spec.categories[c] for c in classes) if spec.categories else ()
  fields = {**dataset.fields, target: dataclasses.replace(spec, categories=names)}
  task = dataclasses.replace(dataset.task, num_classes=len(classes))
  return dataclasses.replace(dataset, train=splits["train"], test=splits["test"],
                             fields=fields, task=task)
