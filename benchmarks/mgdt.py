"""MGDT throughput: the jitted multi-env rollout against Python-loop evaluators, and training.

Evaluation: the same policy, fresh parameters (`mgdt.init_state`; speed does not depend on
training) and env-steps (games x envs x steps) in all four evaluators:
  jitted      `minatar.rollout` with `mgdt.dt_agent`: the whole lax.scan over steps in one jit;
              cached attention (one pass over the window per move, then the new return token)
  jitted-nocache  the same rollout with `PlayMode.cache=False`: the full model twice per move
  py-vmapped  a Python loop over steps; per step one jitted, vmapped `Game.step` per game
  py-per-env  the public MGDT colab's loop: Python over steps and over a gym-style list of single
              envs (per-env jitted `Game.reset` / `Game.step`, NumPy out); the model called
              once per step on the batch of all envs
The Python loops call the same `dt_agent` act/observe (window bookkeeping included), jitted
separately, with the same keys (`minatar.step_keys` / `reset_keys`): only the loop structure
differs. Play is the experiment's (kappa=3 return sampling: a return read, then an action read
given the sampled return). Checked first: greedy (fixed return, temperature 1e-6), the Python
loops play the rollout's actions; with kappa=3 sampling, the cached rollout plays the uncached
one's actions under the same keys.
Training: `mgdt.make_train_step`, jitted, state donated, on random windows shaped like the
`episodes:` source's; tokens per window = context * (patches + 3); FLOPs from cost_analysis.
Time: medians over --repeats, block_until_ready, after a warm-up each (rollout: a full run, it
compiles per step count; Python loops: 2 steps compile all their pieces); evaluators' repeats
are interleaved so load drift on a shared machine hits all alike. No data set is needed:
random parameters, kappa over the return bins' range.  python benchmarks/mgdt.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # experiments/

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments import mgdt as experiment  # noqa: E402
from jaxml.algos import mgdt  # noqa: E402
from jaxml.envs import minatar  # noqa: E402

_MODEL_FIELDS = ("patch_size", "width", "depth", "num_heads")
SIZES = {"tiny": {k: experiment.get_config("smoke").model[k] for k in _MODEL_FIELDS},
         "default": {k: experiment.get_config().model[k] for k in _MODEL_FIELDS}}
# Evaluating the default size is opt-in (--eval_sizes tiny,default): its policy costs ~20x
# tiny's FLOPs per env-step, minutes per evaluator on 2 cores.
FULL = {"sizes": "tiny,default", "eval_sizes": "tiny",
        "games": "breakout,asterix,freeway,space_invaders", "envs": 32, "steps": 200}
QUICK = dict(sizes="tiny", eval_sizes="tiny", games="breakout,space_invaders", envs=4, steps=20)
CHECK_ENVS, CHECK_STEPS = 2, 6  # the agreement check's rollout: cheap, every game
MIN_REPEAT_S = 1.0  # training: steps per repeat are chosen so one repeat takes about this
flops_of = lambda compiled: (compiled.cost_analysis() or {}).get("flops")  # None: not counted
loadavg = lambda: ", ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn, *args) -> float:
  began = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - began


def make_config(size: str, games, greedy: bool = False):
  config = experiment.get_config()
  config.model.update(SIZES[size])
  config.data.games = tuple(games)
  # κ over the return bins' one range: per-game ranges come from a built dataset, which this
  # benchmark (random parameters, random windows) neither needs nor builds.
  config.play.kappa_scale = "global"
  if greedy:  # deterministic play: fixed return, argmax action (ties aside)
    config.play.fixed_return, config.play.temperature = True, 1e-6
  return config


class SingleEnv:
  """One env, gym style: it keeps its state; key data and an int in, NumPy out (waits per env)."""

  def __init__(self, reset, step, raw_key):
    frame, self.state = reset(raw_key)
    self._step, self.frame = step, np.asarray(frame)

  def step(self, raw_key, action: int):
    frame, self.state, reward, done = self._step(raw_key, self.state, action)
    return np.asarray(frame), float(reward), bool(done)


class Evaluators:
  """The three evaluators of one config's policy; every jitted piece is built once here."""

  def __init__(self, config, games, envs: int):
    self.config, self.games, self.envs = config, games, envs
    self.uncached = dataclasses.replace(mgdt.PlayMode.of(config), cache=False)
    self.valid = jnp.broadcast_to(jnp.asarray(minatar.valid_action_table(games))[:, None],
                                  (len(games), envs, minatar.NUM_ACTIONS))
    self.act = jax.jit(lambda state, *a: mgdt.dt_agent(config, state).act(*a))
    self.observe = jax.jit(self._observe)
    self.keys = jax.jit(self._keys)
    self.stack = jax.jit(jnp.stack)  # one dispatch, not one per stacked array
    wrap = jax.random.wrap_key_data  # single envs get raw key data: NumPy in, as in gym
    self.single = [(jax.jit(lambda raw, g=g: g.reset(wrap(raw))),
                    jax.jit(lambda raw, s, a, g=g: g.step(wrap(raw), s, a))) for g in games]
    self.vreset = [jax.jit(jax.vmap(g.reset)) for g in games]
    self.vstep = [jax.jit(jax.vmap(g.step)) for g in games]
    self._rollouts = {}

  def _keys(self, key, t):
    agent_key, env_keys = minatar.step_keys(key, t, len(self.games), self.envs)
    return agent_key, tuple(env_keys), jax.random.key_data(env_keys)

  def _observe(self, state, carry, tally, actions, rewards, dones):
    """dt_agent's observe, plus each env's first-episode return (what `rollout` reports)."""
    running, first_return, episodes = tally
    running = running + rewards
    first_return = jnp.where(dones & (episodes == 0), running, first_return)
    tally = (jnp.where(dones, 0.0, running), first_return, episodes + dones)
    return mgdt.dt_agent(self.config, state).observe(carry, actions, rewards, dones), tally

  def jitted(self, state, key, steps: int, record: bool = False, cache: bool = True):
    agent = lambda state: (mgdt.dt_agent(self.config, state) if cache else mgdt.agent(
        self.uncached, state, mgdt.knobs(self.config)))
    rollout = self._rollouts.setdefault((steps, record, cache), jax.jit(
        lambda state, key: minatar.rollout(self.games, agent(state), key, envs_per_game=self.envs,
                                           num_steps=steps, record=record)))  # compiled once
    return jax.block_until_ready(rollout(state, key))

  def python_loop(self, state, key, steps: int, per_env: bool, record: bool = False):
    """Plays like `rollout`, looping over steps in Python; returns its results' subset."""
    shape = (len(self.games), self.envs)
    carry = mgdt.dt_agent(self.config, state).init(*shape)
    starts = minatar.reset_keys(key, *shape)
    if per_env:
      raw = np.asarray(jax.random.key_data(starts))
      envs = [[SingleEnv(*self.single[i], raw[i, e]) for e in range(self.envs)]
              for i in range(shape[0])]
      frames = np.array([[env.frame for env in row] for row in envs])
    else:
      frames, states = zip(*[reset(starts[i]) for i, reset in enumerate(self.vreset)])
      frames = self.stack(frames)
    tally = (jnp.zeros(shape), jnp.full(shape, jnp.nan), jnp.zeros(shape))
    trajectory = []  # (frames seen, actions chosen) per step, as `rollout(record=True)`
    for t in range(steps):
      agent_key, env_keys, raw = self.keys(key, t)
      actions, carry = self.act(state, carry, frames, self.valid, agent_key)
      if record:
        trajectory.append((np.asarray(frames) > 0, np.asarray(actions)))
      if per_env:
        chosen, raw = np.asarray(actions), np.asarray(raw)
        outs = [[env.step(raw[i, e], int(chosen[i, e])) for e, env in enumerate(row)]
                for i, row in enumerate(envs)]
        frames, rewards, dones = (np.array([[o[j] for o in row] for row in outs], dtype)
                                  for j, dtype in ((0, np.float32), (1, np.float32), (2, bool)))
      else:
        outs = [step(env_keys[i], states[i], actions[i]) for i, step in enumerate(self.vstep)]
        states = [o[1] for o in outs]
        frames, rewards, dones = (self.stack([o[j] for o in outs]) for j in (0, 2, 3))
      carry, tally = self.observe(state, carry, tally, actions, rewards, dones)
    trajectory = ({"trajectory": dict(zip(("frame", "action"), map(np.stack, zip(*trajectory))))}
                  if record else {})
    return jax.block_until_ready({"first_return": tally[1], "episodes": tally[2], **trajectory})


def check_agreement(games, state, size):
  """Greedy policy, identical keys: do the Python loops play the rollout's actions?"""
  ev = Evaluators(make_config(size, [g.name for g in games], greedy=True), games, CHECK_ENVS)
  key = jax.random.key(7)
  fields = lambda r: (r["trajectory"]["action"], r["trajectory"]["frame"], r["first_return"])
  reference = fields(jax.device_get(ev.jitted(state, key, CHECK_STEPS, record=True)))
  agree = {}
  for name, per_env in (("py-per-env", True), ("py-vmapped", False)):
    got = fields(jax.device_get(ev.python_loop(state, key, CHECK_STEPS, per_env, record=True)))
    agree[name] = [np.array_equal(a, b, equal_nan=True) for a, b in zip(got, reference)]
  print(f"\nagreement ({size}; greedy, fixed return; {len(games)} games x {CHECK_ENVS} envs x "
        f"{CHECK_STEPS} steps; {len(np.unique(reference[0]))} distinct actions): " + "; ".join(
            f"{n} actions {a[0]}, frames {a[1]}, first returns {a[2]}" for n, a in agree.items()))
  print(f"actions agree: {all(a[0] for a in agree.values())}")
  # Sampled play (the config's kappa): the cached rollout against the full model's, same keys.
  ev = Evaluators(make_config(size, [g.name for g in games]), games, CHECK_ENVS)
  steps = 3 * ev.config.data.context  # the window fills, then slides
  cached, full = (jax.device_get(ev.jitted(state, key, steps, record=True, cache=c))
                  ["trajectory"]["action"] for c in (True, False))
  print(f"cached vs uncached rollout (kappa={ev.config.play.kappa:g} sampling; {len(games)} games"
        f" x {CHECK_ENVS} envs x {steps} steps): actions agree {np.array_equal(cached, full)}")


def bench_eval(size, games, args):
  config = make_config(size, [g.name for g in games])
  state = mgdt.init_state(config, jax.random.key(0))  # shared by all three evaluators
  check_agreement(games, state, size)
  ev = Evaluators(config, games, args.envs)
  key, shape = jax.random.key(1), (len(games), args.envs)
  # The policy's cost per env-step (act: both reads of the window), to tell compute from
  # overhead.
  act_flops = flops_of(ev.act.lower(state, mgdt.dt_agent(config, state).init(*shape),
                                    jnp.zeros(shape + minatar.FRAME_SHAPE), ev.valid,
                                    key).compile())
  runs = {"jitted": lambda steps: ev.jitted(state, key, steps),
          "jitted-nocache": lambda steps: ev.jitted(state, key, steps, cache=False),
          "py-vmapped": lambda steps: ev.python_loop(state, key, steps, per_env=False),
          "py-per-env": lambda steps: ev.python_loop(state, key, steps, per_env=True)}
  warm_s = {name: timed(run, args.steps if name.startswith("jitted") else 2)
            for name, run in runs.items()}
  seconds = {name: [] for name in runs}
  for _ in range(args.repeats):  # interleaved: a load spike on the shared machine hits all
    for name, run in runs.items():
      seconds[name].append(timed(run, args.steps))
  env_steps = shape[0] * shape[1] * args.steps
  return {"size": size, "env_steps": env_steps, "warm_s": warm_s,
          "paired": [c / j for j, c in zip(seconds["jitted"], seconds["py-per-env"])],
          "act_flops": act_flops / (shape[0] * shape[1]) if act_flops else float("nan"),
          "rate": {n: env_steps / statistics.median(s) for n, s in seconds.items()},
          "range": {n: (env_steps / max(s), env_steps / min(s)) for n, s in seconds.items()}}


def random_windows(config, games, rng):
  """A batch shaped like the episodes source's (valid actions of each window's game)."""
  shape = (config.batch_size, config.data.context)
  game = rng.integers(0, len(games), shape[0])
  valid = minatar.valid_action_table(games)[game][:, None, :]
  return {"frame": (rng.random(shape + minatar.FRAME_SHAPE) < 0.1).astype(np.float32),
          "action": np.argmax(valid * rng.random(shape + valid.shape[-1:]), -1).astype(np.int32),
          "reward": rng.integers(0, 2, shape).astype(np.float32), "done": rng.random(shape) < 0.05,
          "return_to_go": rng.uniform(0, config.returns.high, shape).astype(np.float32),
          "step_mask": np.ones(shape, np.float32), "game": game.astype(np.int32)}


def bench_train(size, games, args):
  config = make_config(size, [g.name for g in games])
  state = mgdt.init_state(config, jax.random.key(0))
  params = sum(x.size for x in jax.tree.leaves(state.params))
  batch = jax.device_put(random_windows(config, games, np.random.default_rng(0)))
  key, began = jax.random.key(0), time.perf_counter()
  train_step = mgdt.make_train_step(config, mgdt.valid_table(config))
  compiled = jax.jit(train_step, donate_argnums=0).lower(
      state, batch, key).compile()
  compile_s, flops = time.perf_counter() - began, flops_of(compiled)

  def run(steps):
    nonlocal state
    for _ in range(steps):
      state, _ = compiled(state, batch, key)
    return state

  one = max(timed(run, 1), timed(run, 1))  # warm-up, then one step to size the repeats
  steps = max(1, round(MIN_REPEAT_S / one))
  per_step = statistics.median(timed(run, steps) / steps for _ in range(args.repeats))
  window = config.data.context * ((minatar.FRAME_SHAPE[0] // config.model.patch_size) ** 2 + 3)
  mfu = (flops / per_step / (args.peak_tflops * 1e12)
         if flops and args.peak_tflops and jax.default_backend() == "gpu" else None)
  return {"size": size, "params": params, "batch": config.batch_size, "window": window,
          "per_step": per_step, "flops": flops or float("nan"), "mfu": mfu,
          "compile_s": compile_s, "plan": f"{steps}x{args.repeats}"}


def print_tables(evals, trains, args):
  if evals:
    print("\nEvaluation (env-steps/s, median; same env-steps and parameters in all four)\n")
    print("| size | games x envs x steps | jitted (cached) | jitted-nocache | py-vmapped | "
          "py-per-env | cached / nocache | jitted / py-vmapped | jitted / py-per-env (goal >= "
          "10x) | policy MFLOP/env-step | jitted policy GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in evals:
    rate, flops = r["rate"], r["act_flops"]
    ratio = rate["jitted"] / rate["py-per-env"]
    print(f"| {r['size']} | {len(args.games)} x {args.envs} x {args.steps} = {r['env_steps']} "
          f"| {rate['jitted']:,.0f} | {rate['jitted-nocache']:,.0f} | {rate['py-vmapped']:,.0f} "
          f"| {rate['py-per-env']:,.0f} | {rate['jitted'] / rate['jitted-nocache']:.1f}x | "
          f"{rate['jitted'] / rate['py-vmapped']:.1f}x | {ratio:.1f}x "
          f"{'ok' if ratio >= 10 else 'NO'} | {flops / 1e6:.2f} | "
          f"{flops * rate['jitted'] / 1e9:.1f} |")
  for r in evals:
    print(f"{r['size']}: jitted / py-per-env per repeat (interleaved) " + ", ".join(
        f"{x:.1f}x" for x in r["paired"]) + f"; their median {statistics.median(r['paired']):.1f}x")
    print(f"{r['size']}: range over repeats (env-steps/s) " + "; ".join(
        f"{n} {lo:,.0f} - {hi:,.0f}" for n, (lo, hi) in r["range"].items()) + "; warm-up s "
        "(compile + run) " + ", ".join(f"{n} {s:.1f}" for n, s in r["warm_s"].items()))
  print("\nTraining (mgdt train step on random windows, median)\n")
  print("| size | params | batch x tokens/window | tokens/s | steps/s | GFLOP/step | FLOPs/token "
        "| GFLOP/s | MFU |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in trains:
    tokens, per_step, flops = r["batch"] * r["window"], r["per_step"], r["flops"]
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "- (CPU)"
    print(f"| {r['size']} | {r['params']:,} | {r['batch']} x {r['window']} | "
          f"{tokens / per_step:,.0f} | {1 / per_step:.2f} | {flops / 1e9:.2f} | "
          f"{flops / tokens / 1e6:.2f} M | {flops / per_step / 1e9:.1f} | {mfu} |")
  print("training: steps x repeats " + ", ".join(f"{r['size']} {r['plan']}" for r in trains)
        + "; compile s " + ", ".join(f"{r['size']} {r['compile_s']:.1f}" for r in trains))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer games, envs, steps, sizes")
  for name, value in FULL.items():  # sizes (trained), eval_sizes (evaluated): of SIZES
    parser.add_argument(f"--{name}", type=type(value),
                        help=f"default {value}; with --quick {QUICK[name]}")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--peak_tflops", type=float, help="device peak, for MFU on a GPU")
  args = parser.parse_args(argv)
  for name, value in (QUICK if args.quick else FULL).items():
    value = value if getattr(args, name) is None else getattr(args, name)
    setattr(args, name, [v.strip() for v in value.split(",")] if isinstance(value, str) else value)
  if any(s not in SIZES for s in args.sizes + args.eval_sizes) or args.repeats < 1:
    parser.error(f"sizes must be among {list(SIZES)}, repeats >= 1")
  began = time.perf_counter()
  print("MGDT: jitted multi-env rollout vs Python-loop evaluators (colab style), and training")
  print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores; jax devices: "
        f"{jax.devices()} (backend {jax.default_backend()})")
  print(f"python {platform.python_version()}, numpy {np.__version__}, " + ", ".join(
      f"{p} {importlib.metadata.version(p)}" for p in ("jax", "jaxlib", "flax", "gymnax")))
  print(f"load average (1, 5, 15 min) at start: {loadavg()} (shared machine: timings noisy)")
  print(f"sizes: {', '.join(f'{s} {SIZES[s]}' for s in args.sizes)}; evaluated: "
        f"{', '.join(args.eval_sizes)}; games {', '.join(args.games)}; {args.envs} envs per game;"
        f" {args.steps} steps; context {experiment.get_config().data.context}, float32; "
        f"{args.repeats} repeats, medians")
  games = minatar.make_games(args.games)
  evals = [bench_eval(size, games, args) for size in args.eval_sizes]
  trains = [bench_train(size, games, args) for size in args.sizes]
  print_tables(evals, trains, args)
  print(f"\nload average (1, 5, 15 min) at end: {loadavg()}; total wall time "
        f"{time.perf_counter() - began:.0f} s")
  return evals, trains


if __name__ == "__main__":
  main(sys.argv[1:])
