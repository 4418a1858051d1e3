"""Runner overhead: jaxml's runner against a bare hand-written `jax.jit` loop, in one run.

Both train the same model (the classifier's step function, same optimizer, same shardings)
on the same digits batches for the same number of steps. The bare loop indexes NumPy arrays
and calls the jitted step; the runner adds its input pipeline (inline, or a prefetch thread
where batches cost more than half a step), metrics buffering, logging, periodic
checkpoints (written on a background thread) and preemption checks. Steady-state time
excludes the first (compiling) step on both sides. Prints the median ratio (goal <= 1.05)
and the runner's input-wait share.

  python benchmarks/runner_overhead.py [--steps 600 --repeats 5 --model cnn --batch_size 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import jax

from experiments import classifier as classifier_config
from jaxml import runner
from jaxml.algos import classifier
from jaxml.core import mesh as mesh_lib
from jaxml.data import load_dataset, pipeline
from jaxml.training.steps import Steps


def make_config(args):
  config = classifier_config.get_config(f"model={args.model}" if args.model != "cnn" else "")
  config.num_steps = args.steps
  config.batch_size = args.batch_size
  config.log_every = 50
  config.eval_every = args.steps  # evaluation only at the end, outside the timed loop
  config.checkpoint_every = args.steps // args.checkpoints
  config.progress = False
  config.linear_probe.enabled = False
  config.data.prefetch = args.prefetch
  return config


def time_runner(config) -> tuple[float, float]:
  with tempfile.TemporaryDirectory() as workdir:
    summary = runner.run(config, workdir)
  seconds = (config.num_steps - 1) / summary["perf/steps_per_second"]
  return seconds, summary["perf/input_wait_fraction"]


def time_bare_loop(config) -> float:
  """The same step, hand-driven: NumPy indexing, device_put, jitted step, nothing else."""
  mesh = mesh_lib.make_mesh()
  dataset = load_dataset(config.data)
  steps = Steps.build(classifier.build(config, dataset), mesh)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  train_key = jax.device_put(train_key, mesh_lib.replicated(mesh))
  state = steps.init(init_key)
  arrays, n = dataset.train.arrays, len(dataset.train)
  sharding = mesh_lib.data_sharding(mesh)
  began = None
  for step in range(config.num_steps):
    idx = pipeline.batch_indices(config.seed, step, config.batch_size, n)
    batch = jax.device_put({k: v[idx] for k, v in arrays.items()}, sharding)
    state, metrics = steps.train(state, batch, train_key)
    if began is None:
      jax.block_until_ready(state)
      began = time.perf_counter()
  jax.block_until_ready((state, metrics))
  return time.perf_counter() - began


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--model", default="cnn", choices=("cnn", "mlp"))
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--checkpoints", type=int, default=2,
                      help="checkpoints the runner saves during the timed loop (Orbax, async)")
  parser.add_argument("--prefetch", type=int, default=2,
                      help="config.data.prefetch: batches built ahead on a thread if they cost "
                      "> 1/2 of a step, else inline (0: always inline)")
  args = parser.parse_args(argv)
  config = make_config(args)

  bare, ran, waits = [], [], []
  for _ in range(args.repeats):  # interleaved, so drift in machine load hits both sides
    bare.append(time_bare_loop(config))
    seconds, wait = time_runner(config)
    ran.append(seconds)
    waits.append(wait)
  b, r = statistics.median(bare), statistics.median(ran)
  print(f"machine: {jax.devices()[0].device_kind} x{jax.device_count()} "
        f"({jax.default_backend()}), jax {jax.__version__}, python {sys.version.split()[0]}")
  print(f"work: digits, model={args.model}, global batch {args.batch_size}, "
        f"{args.steps} steps, {args.repeats} repeats (medians), prefetch={args.prefetch}, "
        f"{args.checkpoints} checkpoints")
  print(f"bare jit loop : {b:.3f} s  ({(args.steps - 1) / b:.1f} steps/s)")
  print(f"jaxml runner  : {r:.3f} s  ({(args.steps - 1) / r:.1f} steps/s)")
  print(f"ratio runner/bare: {r / b:.3f}  (goal <= 1.05)")
  print(f"runner input-wait share of step time: {100 * statistics.median(waits):.1f}%")
  print("per-repeat ratios: " + " ".join(f"{x / y:.3f}" for x, y in zip(ran, bare)))


if __name__ == "__main__":
  main()
