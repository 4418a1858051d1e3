"""Odour GNN (issue 21): training throughput of the jitted step, against the same architecture
in PyTorch Geometric and against the random-forest baseline's fit.

Everything runs on the shipped odour data, fold 0 of experiments/odor.py's data block, loaded
through `jaxml.data.load_dataset`, in one process:

  jaxml packed     the algorithm's train step (`jaxml.algos.odor.build`), jitted with the
                   state donated by `Steps.build` as a run does, on a 1-device mesh; each
                   batch packed into the budgets of `model.pack_slack` (the default path)
  jaxml flattened  the same step with packing off. No config turns it off (`pack_slack` must
                   be >= 1), so the step is traced with `graphs.budgets` returning (0, 0),
                   which makes `graphs.apply` take its flattened path (`node_budget=0`):
                   every molecule padded to the largest (92 atoms)
  PyG              benchmarks/odor_pyg.py: the same model in PyTorch Geometric, eager, its
                   trainable parameter count checked equal to jaxml's and its predictions at
                   jaxml's initial weights checked equal; AdamW with the same schedule, the
                   same class-weighted loss, the same molecules in the same batches (converted
                   to PyG `Batch`es once, outside the timing), torch threads = the CPU cores

Throughput: --batches real training batches (the runner's epoch order) are built once; after a
warm-up pass over them (compilation), --windows timed windows of --steps steps each cycle over
them, round-robin over the variants so a change in the machine's load falls on all alike;
molecules/s is the median over windows. The random forest (`odor_peers.fit_predict`, its
defaults, on Morgan count fingerprints of the same training molecules, predicting the test
fold) is timed --rf-repeats times, median. A full GNN run and the 5-fold x 3-seed study are
*estimated* from the packed throughput (num_steps x batch_size molecules per run; evaluation,
data loading and compilation left out) against 5 random-forest fits.

  python benchmarks/odor.py            # the config's model and batch; a few minutes on 2 cores
  python benchmarks/odor.py --quick    # smoke sizes, seconds (tests)
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# libgomp's threads spin at every barrier of torch's parallel ops. On a shared CPU, where
# another process holds a core, a spinning thread waits on one that is not scheduled: 2-thread
# PyG steps then took 50-100x longer than 1-thread ones (0.5 s against 5 ms at --quick sizes,
# 2-3 s against 0.1 s at the config's), and varied 3x between runs. Passive waiting is the
# peer's best setting here (XLA's own thread pool is not OpenMP). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from unittest import mock  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import odor as odor_experiment  # noqa: E402
from jaxml.algos import odor  # noqa: E402
from jaxml.core import mesh as mesh_lib  # noqa: E402
from jaxml.data import load_dataset, molecules, pipeline  # noqa: E402
from jaxml.data.base import labels_of  # noqa: E402
from jaxml.data.sources import odor as odor_source  # noqa: E402
from jaxml.losses import multilabel  # noqa: E402
from jaxml.models import graphs  # noqa: E402
from jaxml.studies import odor_peers  # noqa: E402
from jaxml.training.steps import Steps  # noqa: E402

FOLDS, SEEDS = 5, 3  # the study the estimates are for
PYG_INSTALL = "pip install 'torch_geometric>=2.8,<3'"  # in no extra of pyproject.toml yet
QUICK_RF = {"train": 300, "test": 100, "n_estimators": 10}


def cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def flattened(train_step):
  """`train_step` traced with packing off: `graphs.budgets` returns (0, 0) while it traces,
  so `graphs.apply` flattens every batch (the step is traced once; the patch is gone after)."""

  def step(state, batch, key):
    with mock.patch.object(graphs, "budgets", lambda *_, **__: (0, 0)):
      return train_step(state, batch, key)

  return step


def load_pyg():
  """benchmarks/odor_pyg.py, or None when torch_geometric is not importable."""
  if importlib.util.find_spec("torch_geometric") is None:
    return None
  spec = importlib.util.spec_from_file_location(
      "odor_pyg", os.path.join(os.path.dirname(os.path.abspath(__file__)), "odor_pyg.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # PyG's MessagePassing inspects its module's globals
  spec.loader.exec_module(module)
  return module


def make_runners(config, dataset, batches, mesh, pyg):
  """{variant: one training step on batch i} and facts about the models."""
  algorithm = odor.build(config, dataset)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  key = jax.device_put(train_key, mesh_lib.replicated(mesh))
  runners, facts, states, built = {}, {}, {}, {}
  for name, variant in (("jaxml packed", algorithm),
                        ("jaxml flattened", dataclasses.replace(
                            algorithm, train_step=flattened(algorithm.train_step)))):
    steps = built[name] = Steps.build(variant, mesh)
    states[name] = steps.init(init_key)

    def run(i, name=name, steps=steps):
      states[name], metrics = steps.train(states[name], batches[i], key)
      return metrics["loss"]

    runners[name] = run
  state = states["jaxml packed"]
  facts["params jaxml"] = sum(x.size for x in jax.tree.leaves(state.params))
  if pyg is None:
    return runners, facts
  import torch  # pylint: disable=import-outside-toplevel
  model_config = config.model
  model = pyg.MPNN(dataset.fields["nodes"].shape[-1], dataset.fields["edges"].shape[-1],
                   dataset.task.num_classes, hidden=model_config.hidden,
                   steps=model_config.steps, set2set_steps=model_config.set2set_steps,
                   embedding=model_config.embedding)
  pyg.copy_from_jax(model, nnx.to_pure_dict(state.params))
  facts["params PyG"] = pyg.trainable_count(model)
  facts["PyG frozen recurrent biases"] = sum(b.numel() for b in model.recurrent_biases())
  pyg_batches = [pyg.to_batch({k: np.asarray(v) for k, v in b.items()}) for b in batches]
  jax_probs = np.asarray(built["jaxml packed"].predict(state, batches[0]))
  with torch.no_grad():
    torch_probs = torch.sigmoid(model(pyg_batches[0])).numpy()
  facts["max |probability difference|"] = float(np.max(np.abs(jax_probs - torch_probs)))
  positive, negative = (torch.from_numpy(w) for w in multilabel.label_weights(
      labels_of(dataset.train, dataset.task.target), config.loss.weighting))
  optimizer, schedule = pyg.make_optimizer(
      model, learning_rate=config.optimizer.learning_rate,
      weight_decay=config.optimizer.weight_decay,
      warmup_steps=config.optimizer.warmup_steps, num_steps=config.num_steps)
  runners["PyG"] = lambda i: pyg.train_step(model, optimizer, schedule, pyg_batches[i],
                                            positive, negative)
  return runners, facts


def throughput(runners, num_batches: int, args) -> dict[str, float]:
  """Median molecules/s of each variant over round-robin timed windows."""
  def window(run, start: int, count: int) -> float:
    began = time.perf_counter()
    loss = None
    for i in range(start, start + count):
      loss = run(i % num_batches)
    if isinstance(loss, jax.Array):
      loss.block_until_ready()  # torch's eager step has finished already
    return time.perf_counter() - began

  for run in runners.values():
    window(run, 0, num_batches)  # compilation and warm-up
  seconds = {name: [] for name in runners}
  for w in range(args.windows):
    for name, run in runners.items():
      seconds[name].append(window(run, w * args.steps, args.steps))
  return {name: args.steps * args.batch / statistics.median(s) for name, s in seconds.items()}


def time_forest(config, dataset, args) -> tuple[float, float, int, int]:
  """(median seconds of one random-forest fit_predict, seconds of the fingerprints, training
  and test molecules) on the molecules of the dataset's fold."""
  table, _, _ = odor_source.molecule_table(config.data)
  train_rows, test_rows = (labels_of(split, "molecule") for split in (dataset.train,
                                                                        dataset.test))
  overrides = {}
  if args.quick:
    train_rows, test_rows = train_rows[:QUICK_RF["train"]], test_rows[:QUICK_RF["test"]]
    overrides["n_estimators"] = QUICK_RF["n_estimators"]
  began = time.perf_counter()
  train_x = molecules.morgan_counts([table.smiles[i] for i in train_rows])
  test_x = molecules.morgan_counts([table.smiles[i] for i in test_rows])
  fingerprints = time.perf_counter() - began
  fits = []
  for _ in range(args.rf_repeats):
    began = time.perf_counter()
    odor_peers.fit_predict("random_forest", train_x, table.labels[train_rows], test_x,
                           config.seed, **overrides)
    fits.append(time.perf_counter() - began)
  return statistics.median(fits), fingerprints, len(train_rows), len(test_rows)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=0, help="0: the config's (128)")
  parser.add_argument("--batches", type=int, default=16, help="distinct training batches")
  parser.add_argument("--steps", type=int, default=16, help="steps per timed window")
  parser.add_argument("--windows", type=int, default=5)
  parser.add_argument("--rf-repeats", type=int, default=3)
  parser.add_argument("--quick", action="store_true", help="smoke sizes (tests)")
  args = parser.parse_args(argv)
  if args.quick:
    args.batch, args.batches, args.steps, args.windows, args.rf_repeats = 16, 4, 4, 3, 1
  config = odor_experiment.get_config("smoke" if args.quick else None)
  args.batch = args.batch or config.batch_size
  if min(args.batch, args.batches, args.steps, args.windows, args.rf_repeats) < 1:
    parser.error("--batch, --batches, --steps, --windows and --rf-repeats must be >= 1")
  config.batch_size, config.num_devices, config.progress = args.batch, 1, False
  pyg = load_pyg()
  versions = {name: importlib.metadata.version(name) for name in (
      "jaxlib", "flax", "rdkit", "scikit-learn", *(("torch", "torch_geometric") if pyg else ()))}
  print("Odour GNN: training throughput against PyG and the random forest")
  print(f"machine: {platform.platform()}, {cores()} CPU cores, load average (1, 5, 15 min) "
        "at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  print(f"python {platform.python_version()}, jax {jax.__version__}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items()))
  began = time.perf_counter()
  dataset = load_dataset(config.data)
  print(f"data: odor fold {config.data.fold} of {config.data.folds}, {len(dataset.train)} "
        f"training / {len(dataset.test)} test molecules, loaded in "
        f"{time.perf_counter() - began:.1f} s")
  m = config.model
  print(f"model: hidden {m.hidden}, {m.steps} message steps, set2set {m.set2set_steps}, "
        f"embedding {m.embedding}, {dataset.task.num_classes} labels; batch {args.batch}; "
        f"{args.batches} batches, {args.windows} round-robin windows of {args.steps} steps "
        "after a warm-up pass, medians")
  mesh = mesh_lib.make_mesh(1)
  batches = [pipeline.train_batch(dataset.train, mesh, config.seed, step, args.batch)
             for step in range(args.batches)]
  budget = graphs.budgets(*odor._mean_sizes(dataset.train),  # pylint: disable=protected-access
                          dataset.fields["nodes"].shape[0], dataset.fields["edges"].shape[0],
                          batch_size=args.batch, slack=float(m.pack_slack))
  fit = sum(bool(graphs.fits(b["node_mask"], b["edge_mask"], *budget)) for b in batches)
  print(f"jax: 1 device ({jax.devices()[0].platform}; the step jitted and donated by "
        f"Steps.build on a 1-device mesh); packing budgets {budget[0]} nodes / {budget[1]} "
        f"edges (pack_slack {m.pack_slack}), fitted by {fit} of {len(batches)} batches")
  if pyg is None:
    print(f"PyG peer skipped: torch_geometric is not importable ({PYG_INSTALL})")
  else:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(cores())
    print(f"PyG: eager, torch.get_num_threads() = {torch.get_num_threads()} (the CPU cores), "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
  runners, facts = make_runners(config, dataset, batches, mesh, pyg)
  print(f"parameters: jaxml {facts['params jaxml']:,}", end="")
  if pyg is not None:
    print(f", PyG {facts['params PyG']:,} trainable (+ "
          f"{facts['PyG frozen recurrent biases']:,} torch recurrent biases frozen at 0, "
          "which flax's cells do not have); max |probability difference| at the same "
          f"weights {facts['max |probability difference|']:.1e}")
  else:
    print()
  rates = throughput(runners, len(batches), args)
  print(f"\n{'variant':<16} {'molecules/s':>12} {'/ packed':>9}")
  for name, rate in rates.items():
    print(f"{name:<16} {rate:>12.1f} {rate / rates['jaxml packed']:>9.2f}")
  if pyg is not None:
    print(f"jaxml packed / PyG: {rates['jaxml packed'] / rates['PyG']:.2f}")
    print(f"jaxml flattened / PyG: {rates['jaxml flattened'] / rates['PyG']:.2f}")

  rf_s, fingerprint_s, rf_train, rf_test = time_forest(config, dataset, args)
  molecules_per_run = config.num_steps * config.batch_size
  gnn_run_s = molecules_per_run / rates["jaxml packed"]
  times = {**rates, "rf_fit_s": rf_s, "gnn_run_s": gnn_run_s,
           "gnn_study_s": FOLDS * SEEDS * gnn_run_s, "rf_study_s": FOLDS * rf_s, **facts}
  trees = QUICK_RF["n_estimators"] if args.quick else odor_peers.DEFAULTS["random_forest"][
      "n_estimators"]
  print(f"\nrandom forest ({trees} trees, Morgan counts r2 x 2048 of {rf_train} training "
        f"molecules, predicting {rf_test}; fingerprints {fingerprint_s:.2f} s, not counted): "
        f"fit_predict {rf_s:.2f} s, median of {args.rf_repeats}")
  print(f"ESTIMATES from the packed throughput (not measured; the study's measured wall time "
        f"will be recorded when the study exists): one GNN run = {config.num_steps} steps x "
        f"{config.batch_size} molecules = {gnn_run_s:.3g} s of training steps")
  print(f"GNN run / RF fit: {gnn_run_s / rf_s:.2f}")
  study_ratio = times["gnn_study_s"] / times["rf_study_s"]
  print(f"GNN study ({FOLDS} folds x {SEEDS} seeds, {times['gnn_study_s']:.0f} s) / RF study "
        f"({FOLDS} fits, {times['rf_study_s']:.1f} s): {study_ratio:.2f}")
  print("load average (1, 5, 15 min) at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  return times


if __name__ == "__main__":
  main(sys.argv[1:])
