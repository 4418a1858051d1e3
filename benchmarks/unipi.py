"""UniPi throughput: time per generated plan (keyframes + temporal super-resolution, with
classifier-free guidance) and training steps per second, at the smoke and default sizes.

Each plan is put against a bare baseline, one guided planner call (so the ratio is the
sampler's cost in network calls); the train step is shown with the inverse model's forward
alone. Model FLOPs come from XLA's cost analysis (FLOP utilisation on a GPU is FLOPs per
second over the device's peak).

  python benchmarks/unipi.py [--sizes smoke,default] [--plans 1,16]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import unipi as unipi_config
from jaxml.algos import unipi
from jaxml.data import load_dataset
from jaxml.training.data import prepare_data


def _median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _flops(jitted, *args) -> float:
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def bench(size: str, plans: list[int], repeats: int) -> list[str]:
  config = unipi_config.get_config("smoke" if size == "smoke" else None)
  prepare_data(config.data)
  dataset = load_dataset(config.data)
  algorithm = unipi.build(config, dataset)
  state = jax.jit(algorithm.init)(jax.random.key(0))
  batch = dataset.train.read(np.arange(config.batch_size))
  batch["mask"] = np.ones(config.batch_size, np.float32)
  batch = jax.device_put(batch)
  key = jax.random.key(1)
  train = jax.jit(algorithm.train_step)
  step_s = _median_seconds(lambda: train(state, batch, key)[1]["loss"], repeats)
  train_flops = _flops(train, state, batch, key)
  inverse_only = jax.jit(lambda s, b: unipi.inverse_logits(unipi.ema_model(s), b["video"]))
  inverse_s = _median_seconds(lambda: inverse_only(state, batch), repeats)
  params = sum(x.size for x in jax.tree.leaves(state.params))
  rows = [f"| {size} | train step (batch {config.batch_size}) | {1 / step_s:.2f} steps/s | "
          f"{step_s * 1e3:.0f} ms | {train_flops / 1e9:.1f} GFLOP | {params:,} params | "
          f"inverse-only forward {inverse_s * 1e3:.1f} ms |"]
  for n in plans:
    frames = jnp.asarray(batch["video"][:n, 0])
    tokens = jnp.asarray(batch["tokens"][:n])
    plan = jax.jit(lambda s, f, t, k: unipi.plan_actions(config, unipi.ema_model(s), f, t, k,
                                                         config.plan.guidance))
    plan_s = _median_seconds(functools.partial(plan, state, frames, tokens, key), repeats)
    plan_flops = _flops(plan, state, frames, tokens, key)
    # One guided planner call (conditional + unconditional halves), the sampler's unit.

    def one_call(s, f, t):
      m = unipi.ema_model(s)
      cond = unipi.first_frame_condition(config, unipi.to_signed(f), config.plan.keyframes)
      z = jnp.zeros((f.shape[0], config.plan.keyframes) + f.shape[1:])
      tc, tu = m.text(t), m.text(t, jnp.ones((f.shape[0],), bool))
      return unipi._guided_denoiser(config, m.planner, cond, tc, tu, 1.0)(  # pylint: disable=protected-access
          z, jnp.full((f.shape[0],), 0.5))

    call = jax.jit(one_call)
    call_s = _median_seconds(functools.partial(call, state, frames, tokens), repeats)
    calls = config.plan.sample_steps * (2 if config.plan.hierarchy else 1)
    rows.append(f"| {size} | plan of {n} ({config.plan.sample_steps} DDIM steps × "
                f"{'2 models' if config.plan.hierarchy else '1 model'}) | "
                f"{plan_s * 1e3:.0f} ms | {plan_s / n * 1e3:.1f} ms per plan | "
                f"{plan_flops / 1e9:.2f} GFLOP | {plan_s / call_s:.1f}× one guided "
                f"planner call ({calls} calls) | |")
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="smoke,default")
  parser.add_argument("--plans", default="1,16")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  print(f"devices: {jax.devices()}; jax {jax.__version__}")
  print("| size | what | rate | time | model FLOPs | | |\n|---|---|---|---|---|---|---|")
  for size in args.sizes.split(","):
    for row in bench(size, [int(n) for n in args.plans.split(",")], args.repeats):
      print(row, flush=True)


if __name__ == "__main__":
  main()
