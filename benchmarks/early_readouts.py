"""Early readouts' cost: SiFeR and DeDiER step time against ERM and plain distillation.

Issue 19's goal: SiFeR (amortised over its train and forget steps) and DeDiER within 1.5x the
step time of the method each extends, on the same model and data. Every variant is the
algorithm a run of experiments/early_readouts.py builds (`runner.build_algorithm` +
`Steps.build`, the jitted, donated step of a run) on coloured digits with the digits CNN:

  erm                 the classifier (ERM)
  sifer k=<k>         SiFeR with a forget step every k train steps (`sifer.forget_every`),
                      readout after the first stage; timed over multiples of k steps, so the
                      forget steps are amortised as in a run
  sifer k=0           SiFeR's train step alone (readout trained, nothing forgotten)
  distill             Hinton distillation of a quarter-width student from a teacher with the
                      ERM model (trained for a few steps here: its speed, not its accuracy,
                      matters)
  dedier              the same student with its early readout and DeDiER's weights

Each variant: warm-up steps (compilation), then --steps timed steps on one prebuilt batch per
repeat, ended by block_until_ready; --repeats rounds, round-robin over the variants so a change
in the machine's load falls on all alike; medians. Ratios: sifer / erm, dedier / distill (the
goal) and distill / erm, dedier / erm (the teacher's forward pass is in the student's step).
One CPU device (--devices 1) by default.

  python benchmarks/early_readouts.py [--steps 64 --repeats 5 --batch 128]
  python benchmarks/early_readouts.py --quick   # smoke sizes, seconds (tests)
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from experiments import early_readouts  # noqa: E402
from jaxml import runner  # noqa: E402
from jaxml.core import mesh as mesh_lib  # noqa: E402
from jaxml.data import load_dataset, pipeline  # noqa: E402
from jaxml.training.steps import Steps  # noqa: E402

WARMUP_STEPS = 2
GOAL = 1.5
# (ratio name, numerator, denominator, held to the goal)
RATIOS = (("sifer k={k} / erm", "sifer k={k}", "erm", True),
          ("sifer k=0 / erm", "sifer k=0", "erm", False),
          ("dedier / distill", "dedier", "distill", True),
          ("distill / erm", "distill", "erm", False),
          ("dedier / erm", "dedier", "erm", False))


def make_config(method: str, args, **changes):
  c = early_readouts.get_config(f"method={method}" + (",smoke" if args.quick else ""))
  c.batch_size, c.progress, c.data.prefetch = args.batch, False, 0
  if args.quick:  # the augmentation's compilation is most of a --quick variant's start
    c.augment.crop_pad, c.augment.noise_std = 0, 0.0
  for key, value in changes.items():
    block, leaf = key.split(".")
    c[block][leaf] = value
  return c


def train_teacher(args, workdir: str) -> str:
  """A short ERM run of the teacher's model (the distillers' `distill.teacher`)."""
  c = make_config("erm", args)
  c.num_steps = c.eval_every = c.checkpoint_every = 5
  c.linear_probe.enabled = False
  runner.run(c, workdir)
  return workdir


class Variant:
  """One algorithm's jitted train step with its state, on one prebuilt batch."""

  def __init__(self, config, dataset, mesh):
    self.steps = Steps.build(runner.build_algorithm(config, dataset), mesh)
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    self.key = jax.device_put(train_key, mesh_lib.replicated(mesh))
    self.state = self.steps.init(init_key)
    self.batch = pipeline.train_batch(dataset.train, mesh, config.seed, 0, config.batch_size)

  def run(self, num_steps: int) -> float:
    jax.block_until_ready(self.state)
    began = time.perf_counter()
    for _ in range(num_steps):
      self.state, metrics = self.steps.train(self.state, self.batch, self.key)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - began


def bench(args, mesh, teacher: str) -> dict[str, float]:
  """Median milliseconds per step of every variant."""
  configs = {"erm": make_config("erm", args)}
  for k in args.forget_every:
    configs[f"sifer k={k}"] = make_config("sifer", args, **{"sifer.forget_every": k})
  configs["distill"] = make_config("distill", args, **{"distill.teacher": teacher})
  configs["dedier"] = make_config("dedier", args, **{"distill.teacher": teacher})
  dataset = load_dataset(configs["erm"].data)
  variants = {name: Variant(c, dataset, mesh) for name, c in configs.items()}
  for variant in variants.values():
    variant.run(WARMUP_STEPS)
  times = {name: [] for name in variants}
  for _ in range(args.repeats):
    for name, variant in variants.items():
      times[name].append(variant.run(args.steps))
  return {name: statistics.median(t) * 1e3 / args.steps for name, t in times.items()}


def ratios(ms: dict[str, float], forget_every) -> list[tuple[str, float, bool]]:
  out = []
  for name, top, bottom, goal in RATIOS:
    for k in (forget_every if "{k}" in name else [None]):
      if k == 0 and goal:
        continue  # k=0 has its own row
      label, a = name.format(k=k), top.format(k=k)
      if a in ms:
        out.append((label, ms[a] / ms[bottom], goal))
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ints = lambda s: [int(x) for x in s.split(",") if x]
  parser.add_argument("--forget_every", type=ints, default=[0, 2, 8],
                      help="SiFeR's k values; --steps is rounded up to a multiple of each")
  parser.add_argument("--steps", type=int, default=64, help="timed steps per repeat")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--devices", type=int, default=1, help="mesh size (0: every device)")
  parser.add_argument("--quick", action="store_true", help="smoke models, 8 steps x 2 (tests)")
  args = parser.parse_args(argv)
  if args.quick:
    args.steps, args.repeats, args.batch, args.forget_every = 8, 2, 32, [4]
  if min(args.steps, args.repeats, args.batch) < 1 or min(args.forget_every, default=0) < 0:
    parser.error("--steps, --repeats and --batch must be >= 1 and --forget_every >= 0")
  period = math.lcm(*[k for k in args.forget_every if k] or [1])
  args.steps = -(-args.steps // period) * period  # whole forget periods
  mesh = mesh_lib.make_mesh(args.devices)
  print("Early readouts: step time of SiFeR and DeDiER against ERM and plain distillation")
  print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores, load average (1, 5, 15 "
        "min) at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  print(f"python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {importlib.metadata.version('jaxlib')}, flax {importlib.metadata.version('flax')}")
  print(f"jax devices: {jax.device_count()} x {jax.devices()[0].platform}, mesh over "
        f"{mesh.devices.size}; coloured digits, {'smoke' if args.quick else 'digits'} CNN, "
        f"batch {args.batch}; {args.steps} timed steps x {args.repeats} round-robin repeats "
        f"after {WARMUP_STEPS} warm-up steps, medians")
  with tempfile.TemporaryDirectory() as scratch:
    ms = bench(args, mesh, train_teacher(args, os.path.join(scratch, "teacher")))
  print(f"\n{'variant':<14} {'ms/step':>8}")
  for name, value in ms.items():
    print(f"{name:<14} {value:>8.2f}")
  rows = ratios(ms, args.forget_every)
  print(f"\n{'ratio':<20} {'value':>6}  goal")
  for label, value, goal in rows:
    verdict = (f"<= {GOAL}: {'met' if value <= GOAL else 'NOT met'}") if goal else "-"
    print(f"{label:<20} {value:>6.2f}  {verdict}")
  print("load average (1, 5, 15 min) at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  return ms, rows


if __name__ == "__main__":
  main(sys.argv[1:])
