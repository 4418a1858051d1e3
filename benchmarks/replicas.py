"""Replicas side by side: R replicas in one jitted, vmapped step vs R sequential runs.

Issue 18 trains R replicas of one config (jaxml/training/replicas.py) to measure how much
they disagree; that is only worth building into the runner if R replicas side by side cost
less than R runs one after another. Same model, same data, same jitted-step path as a run
(`runner.build_algorithm` + `Steps.build`), on two workloads:
  mlp        classifier MLP on digits (`experiments/classifier.py:model=mlp`; --mlp_hidden,
             --mlp_batch), with its augmentation (crop, noise) in the step;
  clicklog   the click-through recommender (`experiments/classifier.py:clicklog`, its model
             and optimiser as configured there) on a smaller generated log (--clicklog_train
             rows instead of 50,000, for a quicker start; --clicklog_batch).
Measured: steady-state replica-steps per second. Each variant (the plain run, `replicas.count`
0, and each R) takes a few warm-up steps (compilation, then block_until_ready), then K timed
steps (--steps) ended by block_until_ready; --repeats rounds, round-robin over the variants
so a change in the machine's load falls on all alike; medians.
  with data  each step builds its batch with `pipeline.train_batch(..., sampler)` (the
             algorithm's sampler: R * batch rows for replicas, R data orders) and device_puts
             it: R times the data is part of the cost;
  step only  the jitted step on one prebuilt batch.
Side by side: K steps of the replicated step, R replica-steps each, so R * K / seconds.
Sequential: R runs one after another take R times as long as one, so their replica-steps/s is
ONE plain run's steps/s (K / seconds): an assumption, not a measurement of R runs (each
sequential run in its own process would also compile and load data once more, which this
leaves out, so it flatters the sequential side). Speed-up = side by side / sequential.
Devices: one CPU device by default (--devices 1; XLA's default, XLA_FLAGS is not forced, and a
mesh over the first device only when more exist, e.g. under the tests' 8), so both sides run
the same single-device program and the replica axis is the only difference.

  python benchmarks/replicas.py [--replicas 2,4,8 --steps 100 --repeats 5]
  python benchmarks/replicas.py --quick   # tiny, R=2, < 30 s (tests/test_replicas_benchmark.py)
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from experiments import classifier as classifier_config  # noqa: E402
from jaxml import runner  # noqa: E402
from jaxml.core import mesh as mesh_lib  # noqa: E402
from jaxml.data import load_dataset, pipeline  # noqa: E402
from jaxml.training.steps import Steps  # noqa: E402

MODELS = ("mlp", "clicklog")
WARMUP_STEPS = 3


def make_config(model: str, args, count: int):
  """The workload's config with `replicas.count` = count (0: the plain run)."""
  if model == "mlp":
    c = classifier_config.get_config("model=mlp")
    c.model.hidden, c.batch_size = tuple(args.mlp_hidden), args.mlp_batch
    if args.quick:  # its augmentation compiles for ~6 s of --quick on 2 busy cores
      c.augment.crop_pad, c.augment.noise_std = 0, 0.0
  else:
    c = classifier_config.get_config("clicklog")
    c.data.train_size, c.data.test_size = args.clicklog_train, args.clicklog_test
    c.batch_size = args.clicklog_batch
    if args.quick:
      c.model.embed_dim, c.model.hidden = 4, (16,)
  c.replicas.count = count
  return c


class Variant:
  """One jitted train step (plain or R replicas) with its state, driven step by step."""

  def __init__(self, config, dataset, mesh):
    self.config, self.dataset, self.mesh = config, dataset, mesh
    algorithm = runner.build_algorithm(config, dataset)
    self.count = algorithm.replicas or 1
    self.sampler = algorithm.sampler
    self.steps = Steps.build(algorithm, mesh)
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    self.key = jax.device_put(train_key, mesh_lib.replicated(mesh))
    self.state = self.steps.init(init_key)
    self.step = 0
    self.fixed_batch = self.batch()

  def batch(self) -> dict:
    return pipeline.train_batch(self.dataset.train, self.mesh, self.config.seed, self.step,
                                self.config.batch_size, self.sampler)

  def run(self, num_steps: int, with_data: bool) -> float:
    """Seconds for `num_steps` steps, from a settled state to the last one's result."""
    jax.block_until_ready(self.state)
    began = time.perf_counter()
    for _ in range(num_steps):
      batch = self.batch() if with_data else self.fixed_batch
      self.state, metrics = self.steps.train(self.state, batch, self.key)
      self.step += 1
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - began


def batch_rows(batch: dict) -> int:
  rows = {v.shape[0] for v in batch.values()}
  assert len(rows) == 1, rows
  return rows.pop()


def replica_axis(state) -> int:
  """The parameters' leading size: R for a replicated state (its replica axis)."""
  return jax.tree.leaves(state.params)[0].shape[0]


def bench_model(model: str, args, mesh) -> list[dict]:
  """One row per R: sequential vs side-by-side replica-steps/s, with data and step only."""
  plain_config = make_config(model, args, 0)
  dataset = load_dataset(plain_config.data)
  variants = {0: Variant(plain_config, dataset, mesh)}
  variants.update({r: Variant(make_config(model, args, r), dataset, mesh)
                   for r in args.replicas})
  for variant in variants.values():
    variant.run(WARMUP_STEPS, with_data=True)
  times = {(r, d): [] for r in variants for d in (True, False)}
  for _ in range(args.repeats):
    for r, variant in variants.items():
      for with_data in (True, False):
        times[r, with_data].append(variant.run(args.steps, with_data))
  rate = lambda r, d: variants[r].count * args.steps / statistics.median(times[r, d])
  spread = lambda r, d: (min(times[r, d]) * 1e3 / args.steps, max(times[r, d]) * 1e3 / args.steps)
  plain = variants[0]
  rows = []
  for r in args.replicas:
    row = {"model": model, "replicas": r, "batch": plain.config.batch_size,
           "plain_batch_rows": batch_rows(plain.fixed_batch),
           "batch_rows": batch_rows(variants[r].fixed_batch),
           "replica_axis": replica_axis(variants[r].state)}
    for key, with_data in (("data", True), ("step", False)):
      row[f"{key}_sequential"] = rate(0, with_data)
      row[f"{key}_side_by_side"] = rate(r, with_data)
      row[f"{key}_speedup"] = row[f"{key}_side_by_side"] / row[f"{key}_sequential"]
      row[f"{key}_ms_range"] = spread(r, with_data)
    rows.append(row)
  return rows


def print_environment(args, mesh):
  print("Replicas side by side (one jitted vmapped step) vs sequential runs, replica-steps/s")
  print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores, load average (1, 5, 15 min)"
        " at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  print(f"python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {importlib.metadata.version('jaxlib')}, flax {importlib.metadata.version('flax')}")
  print(f"jax devices: {jax.device_count()} x {jax.devices()[0].platform}, mesh over "
        f"{mesh.devices.size} ({jax.devices()[0].device_kind})")
  print(f"work: mlp hidden {tuple(args.mlp_hidden)} batch {args.mlp_batch} (digits); clicklog "
        f"{args.clicklog_train} rows, batch {args.clicklog_batch}; R in {tuple(args.replicas)}; "
        f"{args.steps} timed steps x {args.repeats} round-robin repeats after {WARMUP_STEPS} "
        "warm-up steps, medians")
  print("sequential = one plain run's steps/s (R runs one after another take R times as long)")


HEADER = (f"{'model':<9} {'R':>2} {'batch':>5} {'rows':>5} | {'sequential':>10} "
          f"{'side-by-side':>12} {'speed-up':>8} | {'sequential':>10} {'side-by-side':>12} "
          f"{'speed-up':>8}")


def print_table(rows):
  print("\n(with data = batch building + step; step = the jitted step on a prebuilt batch;"
        " rates in replica-steps/s)")
  print(f"{'':<24} | {'with data':^32} | {'step only':^32}")
  print(HEADER)
  for r in rows:
    print(f"{r['model']:<9} {r['replicas']:>2} {r['batch']:>5} {r['batch_rows']:>5} | "
          f"{r['data_sequential']:>10.1f} {r['data_side_by_side']:>12.1f} "
          f"{r['data_speedup']:>8.2f} | {r['step_sequential']:>10.1f} "
          f"{r['step_side_by_side']:>12.1f} {r['step_speedup']:>8.2f}")
  print("spread of the replicated step, ms per step (min-max over repeats), with data / step: "
        + "; ".join(f"{r['model']} R={r['replicas']} {r['data_ms_range'][0]:.2f}-"
                    f"{r['data_ms_range'][1]:.2f} / {r['step_ms_range'][0]:.2f}-"
                    f"{r['step_ms_range'][1]:.2f}" for r in rows))


def parse_table(text: str) -> list[dict]:
  """The printed table's rows back as numbers (what the test reads)."""
  lines = text.splitlines()
  rows = []
  for line in lines[lines.index(HEADER) + 1:]:
    fields = line.replace("|", " ").split()
    if not fields or fields[0] not in MODELS:
      break
    model, r, batch, rows_, *rates = fields
    rows.append({"model": model, "replicas": int(r), "batch": int(batch),
                 "batch_rows": int(rows_), "rates": [float(x) for x in rates]})
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ints = lambda s: [int(x) for x in s.split(",") if x]
  parser.add_argument("--replicas", type=ints, default=[2, 4, 8], help="R values, e.g. 2,4,8")
  parser.add_argument("--models", default=",".join(MODELS), help="comma list of mlp, clicklog")
  parser.add_argument("--steps", type=int, default=100, help="timed steps per repeat")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--devices", type=int, default=1, help="mesh size (0: every device)")
  parser.add_argument("--mlp_hidden", type=ints, default=[256, 256])
  parser.add_argument("--mlp_batch", type=int, default=128)
  parser.add_argument("--clicklog_train", type=int, default=10_000)
  parser.add_argument("--clicklog_test", type=int, default=1_000)
  parser.add_argument("--clicklog_batch", type=int, default=256)
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes, no augmentation, R=2, 5 steps x 2 (tests)")
  args = parser.parse_args(argv)
  if args.quick:
    args.replicas, args.steps, args.repeats, args.mlp_hidden = [2], 5, 2, [16]
    args.mlp_batch, args.clicklog_train, args.clicklog_test, args.clicklog_batch = 8, 500, 100, 8
  models = [m for m in args.models.split(",") if m]
  if set(models) - set(MODELS) or not models:
    parser.error(f"--models: a comma list of {', '.join(MODELS)}")
  if not args.replicas or min(args.replicas) < 2:
    parser.error("--replicas: R values of 2 or more")
  if min(args.steps, args.repeats) < 1:
    parser.error("--steps and --repeats must be >= 1")
  mesh = mesh_lib.make_mesh(args.devices)
  print_environment(args, mesh)
  rows = [row for model in models for row in bench_model(model, args, mesh)]
  print_table(rows)
  print("load average (1, 5, 15 min) at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  return rows


if __name__ == "__main__":
  main(sys.argv[1:])
