"""Activation cost: jitted value+gradient and an MLP train step per activation, as ratios to ReLU.

Same work for every activation spec (relu, smelu:1.0, gsmelu, gelu, swish:1.0, softplus:1.0):
  (a) elementwise: jax.jit(jax.value_and_grad(lambda x: sum(act(x)))) on --size float32
      values drawn from N(0, 2^2), so a good share falls in SmeLU's transition [-1, 1];
  (b) MLP step: one jitted SGD step of jaxml's `MLP` (jaxml.models.mlp, the model users run,
      `activation=parse(spec)`): --width inputs, --layers hidden layers of --width, 10
      classes, softmax cross-entropy on a batch of --batch, learning rate 0.01. The model is
      split once with nnx.split and merged inside the step, as the trainers do.
Time: median of --repeats calls after one warm-up call each, block_until_ready. The repeats
are taken round-robin over the activations (one call of each per round), so a change in the
machine's load during the run falls on all of them alike rather than on whichever ran then.
Issue 18 expects SmeLU at about ReLU's cost and cheaper than GELU and Swish; the run says
whether that holds here (SmeLU's ratio to ReLU <= 1.2, its time below GELU's and Swish's).

Cross-check against PyTorch, when torch imports: SmeLU written from its formula in torch
(torch.where on the three pieces) and its autograd gradient, at beta in {0.5, 1, 2} on
values spanning [-3 beta, 3 beta]; GELU (tanh approximation), SiLU and Softplus(beta) against
torch's built-ins on [-6, 6]. Max abs difference of values and gradients must be <= 1e-6,
except GELU's gradient (<= 1e-5): jax differentiates tanh as 1 - tanh^2, which is exactly 0 in
float32 once tanh rounds to 1 (|x| >~ 4.3 here), so jaxml's GELU gradient there is 1.0 where the
true value is up to 1.0000035; torch's closed-form backward keeps it. Each row also prints both
libraries' float32 error against torch's float64 result, which shows which side is off.
torch is not a dependency of jaxml; without it the cross-check is skipped with a note.

  python benchmarks/activations.py [--size 16777216 --repeats 20 --width 1024 --batch 1024]
  python benchmarks/activations.py --quick      # tiny sizes, 2 repeats (the test runs this)
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
import time  # noqa: E402

from flax import nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxml.models import activations  # noqa: E402
from jaxml.models.mlp import MLP  # noqa: E402

SPECS = ("relu", "smelu:1.0", "gsmelu:alpha=0.5,beta=1.0,left=0.0,right=1.0", "gelu",
         "swish:1.0", "softplus:1.0")
BASELINE = "relu"
TOLERANCE = 1e-6
GELU_GRAD_TOLERANCE = 1e-5  # see the module docstring: float32 tanh saturation in jax's gradient
SMELU_BETAS = (0.5, 1.0, 2.0)
SOFTPLUS_BETAS = (1.0, 2.0)
NUM_CLASSES = 10
LEARNING_RATE = 0.01
AT_RELU_COST = 1.2  # "about ReLU's cost": SmeLU's median within 20% of ReLU's


def elementwise_fn(act):
  return jax.jit(jax.value_and_grad(lambda x: jnp.sum(act(x))))


def mlp_step_fn(act, width: int, layers: int, batch: int, seed: int = 0):
  """A jitted SGD step of jaxml's MLP with `act`, its initial params and one batch."""
  model = MLP(width, (width,) * layers, NUM_CLASSES, activation=act, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(model)

  def loss_fn(params, x, y):
    logits = nnx.merge(graphdef, params)(x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    return jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads), loss

  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((batch, width)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, NUM_CLASSES, batch).astype(np.int32))
  return step, params, x, y


def time_round_robin(calls: dict, repeats: int) -> dict:
  """Median seconds per call of each zero-argument callable, one call of each per round."""
  for fn in calls.values():
    fn()  # warm-up: compile and first run
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, fn in calls.items():
      began = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - began)
  return {name: (statistics.median(t), min(t), max(t)) for name, t in times.items()}


def bench_timings(args) -> list[dict]:
  x = jnp.asarray(2.0 * np.random.default_rng(0).standard_normal(args.size).astype(np.float32))
  elementwise, steps = {}, {}
  for spec in SPECS:
    fn = elementwise_fn(activations.parse(spec))
    elementwise[spec] = lambda fn=fn: jax.block_until_ready(fn(x))
    step, params, xb, yb = mlp_step_fn(activations.parse(spec), args.width, args.layers,
                                       args.batch)
    state = {"params": params}

    def run_step(step=step, state=state, xb=xb, yb=yb):
      state["params"], loss = step(state["params"], xb, yb)
      jax.block_until_ready((state["params"], loss))

    steps[spec] = run_step
  element_times = time_round_robin(elementwise, args.repeats)
  step_times = time_round_robin(steps, args.repeats)
  rows = []
  for spec in SPECS:
    e, s = element_times[spec], step_times[spec]
    rows.append({"activation": spec,
                 "elementwise_s": e[0], "elementwise_range_s": e[1:],
                 "elementwise_ratio": e[0] / element_times[BASELINE][0],
                 "mlp_step_s": s[0], "mlp_step_range_s": s[1:],
                 "mlp_step_ratio": s[0] / step_times[BASELINE][0]})
  return rows


def _torch_smelu(torch, x, beta: float):
  quadratic = (x + beta) ** 2 / (4.0 * beta)
  return torch.where(x <= -beta, torch.zeros_like(x), torch.where(x >= beta, x, quadratic))


def _torch_value_and_grad(torch, torch_act, values: np.ndarray):
  leaf = torch.from_numpy(values.copy()).requires_grad_()
  value = torch_act(leaf)
  value.sum().backward()
  return value.detach().numpy(), leaf.grad.numpy()


def _max_abs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _diffs(torch, jax_act, torch_act, values: np.ndarray) -> dict:
  """Max abs differences jax - torch of values and gradients (d act / dx, elementwise), and
  each side's float32 gradient error against torch's float64 gradient."""
  value_j, vjp = jax.vjp(jax_act, jnp.asarray(values))
  (grad_j,) = vjp(jnp.ones_like(value_j))
  value_t, grad_t = _torch_value_and_grad(torch, torch_act, values)
  _, grad_64 = _torch_value_and_grad(torch, torch_act, values.astype(np.float64))
  return {"value_diff": _max_abs(value_j, value_t), "grad_diff": _max_abs(grad_j, grad_t),
          "jax_grad_error": _max_abs(grad_j, grad_64),
          "torch_grad_error": _max_abs(grad_t, grad_64)}


def cross_check(torch, points: int) -> list[dict]:
  rng = np.random.default_rng(1)
  checks = []  # (name, jax function, torch function, half-width of the input range)
  for beta in SMELU_BETAS:
    checks.append((f"smelu:{beta}", lambda x, b=beta: activations.smelu(x, b),
                   lambda x, b=beta: _torch_smelu(torch, x, b), 3.0 * beta))
  checks.append(("gelu", activations.gelu,
                 lambda x: torch.nn.functional.gelu(x, approximate="tanh"), 6.0))
  checks.append(("swish:1.0 vs silu", lambda x: activations.swish(x, 1.0),
                 torch.nn.functional.silu, 6.0))
  for beta in SOFTPLUS_BETAS:
    checks.append((f"softplus:{beta}", lambda x, b=beta: activations.softplus(x, b),
                   lambda x, b=beta: torch.nn.functional.softplus(x, beta=b), 6.0))
  rows = []
  for name, jax_act, torch_act, half in checks:
    # An even grid over the range (its ends and the kinks' neighbourhoods) plus random draws.
    values = np.concatenate([np.linspace(-half, half, points // 2),
                             rng.uniform(-half, half, points - points // 2)]).astype(np.float32)
    rows.append({"activation": name, "range": half,
                 **_diffs(torch, jax_act, torch_act, values),
                 "value_tolerance": TOLERANCE,
                 "grad_tolerance": GELU_GRAD_TOLERANCE if name == "gelu" else TOLERANCE})
  return rows


def print_environment(args, torch):
  print("Activation cost (jitted value+gradient, and an MLP SGD step) as ratios to ReLU")
  print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPU cores")
  print(f"python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {importlib.metadata.version('jaxlib')}, flax {importlib.metadata.version('flax')}"
        f", numpy {np.__version__}, torch {torch.__version__ if torch else 'not installed'}")
  print("load average (1, 5, 15 min) at start: "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  print(f"jax devices: {jax.device_count()} x {jax.devices()[0].platform}")
  print(f"sizes: elementwise {args.size} float32 values ~ N(0, 4); MLP {args.width} inputs, "
        f"{args.layers} x {args.width} hidden, {NUM_CLASSES} classes, batch {args.batch}, "
        f"SGD lr {LEARNING_RATE}; {args.repeats} timed repeats per activation after a warm-up, "
        "round-robin, medians")


def print_timings(rows):
  print(f"\n{'activation':<46} {'value+grad':>11} {'ratio':>6} {'MLP step':>10} {'ratio':>6}")
  for r in rows:
    print(f"{r['activation']:<46} {r['elementwise_s'] * 1e3:>9.2f}ms "
          f"{r['elementwise_ratio']:>6.2f} {r['mlp_step_s'] * 1e3:>8.1f}ms "
          f"{r['mlp_step_ratio']:>6.2f}")
  print("spread (min - max ms): " + "; ".join(
      f"{r['activation'].split(':')[0]} {r['elementwise_range_s'][0] * 1e3:.1f}-"
      f"{r['elementwise_range_s'][1] * 1e3:.1f} / {r['mlp_step_range_s'][0] * 1e3:.1f}-"
      f"{r['mlp_step_range_s'][1] * 1e3:.1f}" for r in rows))


def expectation(rows) -> dict:
  """Does SmeLU cost about what ReLU does, and less than GELU and Swish? Per measure."""
  by = {r["activation"]: r for r in rows}
  verdicts = {}
  for key, title in (("elementwise", "elementwise value+grad"), ("mlp_step", "MLP step")):
    smelu, gelu, swish = (by[s][f"{key}_s"] for s in ("smelu:1.0", "gelu", "swish:1.0"))
    ratio = by["smelu:1.0"][f"{key}_ratio"]
    at_relu = ratio <= AT_RELU_COST
    cheaper = smelu < gelu and smelu < swish
    verdicts[key] = at_relu and cheaper
    print(f"issue 18's expectation on {title}: SmeLU/ReLU {ratio:.2f} "
          f"({'within' if at_relu else 'above'} {AT_RELU_COST}), SmeLU/GELU {smelu / gelu:.2f}, "
          f"SmeLU/Swish {smelu / swish:.2f} -> {'holds' if verdicts[key] else 'does not hold'}")
  return verdicts


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=2**24, help="elements of the elementwise test")
  parser.add_argument("--width", type=int, default=1024, help="MLP input and hidden width")
  parser.add_argument("--layers", type=int, default=3, help="MLP hidden layers")
  parser.add_argument("--batch", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--points", type=int, default=4000, help="inputs per torch cross-check")
  parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats (tests)")
  args = parser.parse_args(argv)
  if args.quick:
    args.size, args.width, args.layers, args.batch, args.repeats = 4096, 32, 3, 16, 2
  if min(args.size, args.width, args.layers, args.batch, args.repeats, args.points) < 1:
    parser.error("--size, --width, --layers, --batch, --repeats and --points must be >= 1")
  try:
    import torch  # noqa: PLC0415 -- optional: only the cross-check needs it
  except ImportError:
    torch = None
  print_environment(args, torch)
  timings = bench_timings(args)
  print_timings(timings)
  verdicts = expectation(timings)

  if torch is None:
    checks = None
    print("\ntorch is not installed: the PyTorch cross-check is skipped "
          "(pip install torch==2.13.0 to run it)")
  else:
    checks = cross_check(torch, args.points)
    print(f"\nCross-check against PyTorch {torch.__version__} ({args.points} float32 inputs "
          f"each; tolerances in the grad tol column, values {TOLERANCE:g})")
    print(f"{'activation':<18} {'range':>6} {'max|value diff|':>15} {'max|grad diff|':>14} "
          f"{'grad tol':>8} {'jax grad err':>12} {'torch grad err':>14}  (errors vs torch f64)")
    for c in checks:
      print(f"{c['activation']:<18} {'±' + format(c['range'], 'g'):>6} {c['value_diff']:>15.2e} "
            f"{c['grad_diff']:>14.2e} {c['grad_tolerance']:>8.0e} {c['jax_grad_error']:>12.2e} "
            f"{c['torch_grad_error']:>14.2e}")
    failed = [c["activation"] for c in checks
              if not (math.isfinite(c["value_diff"]) and math.isfinite(c["grad_diff"])
                      and c["value_diff"] <= c["value_tolerance"]
                      and c["grad_diff"] <= c["grad_tolerance"])]
    if failed:
      raise SystemExit(f"FAIL: {', '.join(failed)} differ from PyTorch beyond tolerance")
    print(f"all within tolerance: values {TOLERANCE:g}; gradients {TOLERANCE:g}, GELU's "
          f"{GELU_GRAD_TOLERANCE:g}")
  print("\nR vmapped replicas vs R sequential runs (issue 18's other benchmark): "
        "benchmarks/replicas.py")
  print("load average (1, 5, 15 min) at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  return {"timings": timings, "expectation": verdicts, "cross_checks": checks}


if __name__ == "__main__":
  main(sys.argv[1:])
