"""Concept drift: the cost of a meta-learned reweighting step against a plain ERM step.

Issue 20's goal: the meta step (the helper's one-step look-ahead, exact second order, then the
weighted update; jaxml/algos/drift.py) within 3x the step time of ERM on the same model and
data. Every variant is the algorithm a run of experiments/drift.py builds
(`runner.build_algorithm` + `Steps.build`, the jitted, donated step of a run) on
`drifting_mixture` with the config's MLP:

  uniform       ERM: every weight 1 (the baseline)
  exponential   one fixed decay exp(-age / tau): a weighted step, no meta step
  learned       the method: K timescales, the helper meta-learned every step
  joint         the unconstrained helper w(x, age), meta-learned the same way

Each variant: warm-up steps (compilation), then --steps timed steps on one prebuilt batch per
repeat, ended by block_until_ready; --repeats rounds, round-robin over the variants so a change
in the machine's load falls on all alike; medians. One CPU device (--devices 1) by default.

  python benchmarks/drift.py [--steps 100 --repeats 5 --batch 128]
  python benchmarks/drift.py --quick   # smoke sizes, seconds (tests)
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

from experiments import drift  # noqa: E402
from jaxml import runner  # noqa: E402
from jaxml.core import mesh as mesh_lib  # noqa: E402
from jaxml.data import load_dataset, pipeline  # noqa: E402
from jaxml.training.steps import Steps  # noqa: E402

VARIANTS = ("uniform", "exponential", "learned", "joint")
WARMUP_STEPS = 2
GOAL = 3.0


def make_config(weighting: str, args):
  c = drift.get_config(f"method={weighting}" + (",smoke" if args.quick else ""))
  c.batch_size, c.progress = args.batch, False
  return c


def step_ms(args, mesh) -> dict[str, float]:
  """Median milliseconds per step of every variant."""
  configs = {name: make_config(name, args) for name in VARIANTS}
  dataset = load_dataset(configs["uniform"].data)
  states = {}
  for name, config in configs.items():
    steps = Steps.build(runner.build_algorithm(config, dataset), mesh)
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    batch = pipeline.train_batch(dataset.train, mesh, config.seed, 0, config.batch_size)
    states[name] = [steps, steps.init(init_key),
                    jax.device_put(train_key, mesh_lib.replicated(mesh)), batch]

  def run(name: str, num_steps: int) -> float:
    steps, state, key, batch = states[name]
    jax.block_until_ready(state)
    began = time.perf_counter()
    for _ in range(num_steps):
      state, metrics = steps.train(state, batch, key)
    jax.block_until_ready((state, metrics))
    states[name][1] = state
    return time.perf_counter() - began

  for name in VARIANTS:
    run(name, WARMUP_STEPS)
  times = {name: [] for name in VARIANTS}
  for _ in range(args.repeats):
    for name in VARIANTS:
      times[name].append(run(name, args.steps))
  return {name: statistics.median(t) * 1e3 / args.steps for name, t in times.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=100, help="timed steps per repeat")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--devices", type=int, default=1, help="mesh size (0: every device)")
  parser.add_argument("--quick", action="store_true", help="smoke sizes, 5 steps x 2 (tests)")
  args = parser.parse_args(argv)
  if args.quick:
    args.steps, args.repeats, args.batch = 5, 2, 32
  if min(args.steps, args.repeats, args.batch) < 1:
    parser.error("--steps, --repeats and --batch must be >= 1")
  mesh = mesh_lib.make_mesh(args.devices)
  print("Concept drift: step time of meta-learned reweighting against ERM")
  print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores, load average (1, 5, 15 "
        "min) at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  print(f"python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {importlib.metadata.version('jaxlib')}, flax {importlib.metadata.version('flax')}")
  print(f"jax devices: {jax.device_count()} x {jax.devices()[0].platform}, mesh over "
        f"{mesh.devices.size}; drifting_mixture, {'smoke' if args.quick else 'the config'}'s "
        f"MLP, batch {args.batch}; {args.steps} timed steps x {args.repeats} round-robin "
        f"repeats after {WARMUP_STEPS} warm-up steps, medians")
  ms = step_ms(args, mesh)
  print(f"\n{'variant':<12} {'ms/step':>8} {'/ uniform':>10}")
  for name, value in ms.items():
    print(f"{name:<12} {value:>8.3f} {value / ms['uniform']:>10.2f}")
  ratio = ms["learned"] / ms["uniform"]
  print(f"\nmeta step (learned) / ERM step: {ratio:.2f} (goal <= {GOAL}: "
        f"{'met' if ratio <= GOAL else 'NOT met'})")
  print("load average (1, 5, 15 min) at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  return ms


if __name__ == "__main__":
  main(sys.argv[1:])
