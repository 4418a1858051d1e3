"""DP-SGD step time: jaxml against jax_privacy, Opacus and non-private steps, in one run.

Same work for every method: one training step (per-example clipping where private, Gaussian
noise, plain SGD update) of the same model on the same batch.
  jaxml ghost    `jaxml.privacy.ghost.ghost_clipped_grad` + `noise.noisy_mean` + optax.sgd
                 (the fast path; what `dp.clipping="ghost"` runs)
  jaxml vmap     `jaxml.privacy.clipping.clipped_grad` (per-example grads by vmap) + the same
  jax_privacy    `jax_privacy.clipping.clipped_grad(..., keep_batch_dim=False,
                 return_grad_norms=True)` in an otherwise identical step (same noise, update)
  jaxml nonpriv  `jax.grad` of the mean loss + the same optax.sgd update
  opacus <mode>  Opacus `PrivacyEngine.make_private` (noise 1.0, clip 1.0, SGD) in every
                 grad_sample_mode it has: hooks, functorch, ew, ghost
  torch nonpriv  plain PyTorch SGD step
Models: an MLP 64-256-256-10 on sklearn digits (8x8 = 64 features), and the jaxml `cnn`
(channels (16, 32), dense 128) on random 28x28x1 images; the PyTorch models are hand-written
equivalents (conv3x3 SAME -> relu -> 2x2 max pool, twice; dense 128; head 10). Before
anything is timed, the three JAX clipping implementations are checked to give the same
clipped-gradient sum (max abs diff printed; ghost is the reference).

Time: JAX steps are jitted with params, optimizer state and key donated; timed with
block_until_ready. Each method runs alone (warm-up, then its repeats back to back, never
interleaved with PyTorch, whose OpenMP workers keep spinning after a call); a repeat is
`steps` consecutive steps (chosen so one repeat takes >= --min_repeat_s), and the figure is the
median over repeats of the time per step. Slow cells get fewer repeats (--max_seconds_per_method;
the repeats actually used are printed; a method slower than --max_step_s per step is timed
once, after its warm-up step). One JAX CPU device; torch.set_num_threads(2).

Models with GroupNorm, embeddings and attention (ResNet-18-GN and a small transformer: jaxml
ghost vs non-private vs Opacus ghost) are in benchmarks/dp_sgd_models.py, run from here:

  python benchmarks/dp_sgd.py [--models mlp,cnn --batches 64,256,1024 --repeats 7]
  python benchmarks/dp_sgd.py --models resnet_gn,transformer --batches 32
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
import warnings  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # dp_sgd_models

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402
from jax_privacy import clipping as jp_clipping  # noqa: E402
from torch import nn  # noqa: E402

from jaxml import models  # noqa: E402
from jaxml.privacy import clipping, ghost, noise  # noqa: E402

import dp_sgd_models  # noqa: E402

try:
  import opacus  # noqa: E402
except ImportError as error:  # reported in the table as missing columns
  opacus, OPACUS_ERROR = None, repr(error)
else:
  OPACUS_ERROR = None

# Opacus warns on every make_private (secure RNG off) and every backward (full backward hooks
# fire without input grads); neither matters for timing.
warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing")

CLIP = 1.0
SIGMA = 1.0
LR = 0.1
OPACUS_MODES = ("hooks", "functorch", "ew", "ghost")
MODEL_CONFIGS = {
    "mlp": (ml_collections.ConfigDict({"name": "mlp", "hidden": (256, 256)}), (64,)),
    "cnn": (ml_collections.ConfigDict({"name": "cnn", "channels": (16, 32), "dense": 128}),
            (28, 28, 1)),
}
DESCRIPTION = {"mlp": "MLP 64-256-256-10 (sklearn digits, 64 features)",
               "cnn": "CNN conv16-conv32-dense128-10 on 28x28x1 (random images)"}
# Goals from issue 4: (jaxml DP / jaxml non-private at batch >= 256, Opacus best / jaxml DP).
GOALS = {"mlp": (1.6, 2.5), "cnn": (2.0, None)}


# ---------------------------------------------------------------------------------------------
# Data.


def make_batch(model: str, batch: int, seed: int = 0):
  """NumPy (x [B, *input_shape] float32, y [B] int32), identical for JAX and PyTorch."""
  rng = np.random.default_rng(seed)
  if model == "mlp":
    from sklearn.datasets import load_digits
    digits = load_digits()
    idx = rng.choice(len(digits.target), batch, replace=batch > len(digits.target))
    x = (digits.data[idx] / 16.0).astype(np.float32)
    y = digits.target[idx].astype(np.int32)
  else:
    x = rng.standard_normal((batch, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
  return x, y


# ---------------------------------------------------------------------------------------------
# JAX steps: (params, opt_state, key, batch) -> (params, opt_state, key), donated.


def per_example_ce(logits, examples):
  return optax.softmax_cross_entropy_with_integer_labels(logits, examples["label"])


def build_jax(model_name: str, batch_size: int):
  config, input_shape = MODEL_CONFIGS[model_name]
  model = models.create(config, num_classes=10, input_shape=input_shape, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.sgd(LR)

  def one_example_loss(p, example):  # for the vmap paths: one example, no batch axis
    m = nnx.merge(graphdef, p, rest, copy=True)
    logits = m(example["image"][None], train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, example["label"][None])[0]

  ghost_fn = ghost.ghost_clipped_grad(ghost.logits_loss(per_example_ce, "image"), CLIP,
                                      graphdef=graphdef)
  vmap_fn = clipping.clipped_grad(one_example_loss, CLIP)
  jp_fn = jp_clipping.clipped_grad(one_example_loss, l2_clip_norm=CLIP, batch_argnums=1,
                                   keep_batch_dim=False, return_grad_norms=True)

  def clip_ghost(p, batch):
    return ghost_fn(p, rest, batch)

  def clip_vmap(p, batch):
    return vmap_fn(p, batch)

  def clip_jax_privacy(p, batch):
    grads, aux = jp_fn(p, batch)
    return clipping.ClippedGrad(grads=grads, norms=aux.grad_norms,
                                num_nonfinite=jnp.zeros((), jnp.int32), sensitivity=CLIP)

  def private_step(clip_fn):
    def step(p, opt_state, key, batch):
      key, noise_key = jax.random.split(key)
      grads = noise.noisy_mean(noise_key, clip_fn(p, batch), SIGMA, batch_size)
      updates, opt_state = tx.update(grads, opt_state, p)
      return optax.apply_updates(p, updates), opt_state, key
    return step

  def nonprivate_step(p, opt_state, key, batch):
    def loss(p):
      m = nnx.merge(graphdef, p, rest, copy=True)
      return per_example_ce(m(batch["image"], train=True), batch).mean()
    grads = jax.grad(loss)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, key

  steps = {"jaxml ghost": private_step(clip_ghost), "jaxml vmap": private_step(clip_vmap),
           "jax_privacy": private_step(clip_jax_privacy), "jaxml nonpriv": nonprivate_step}
  clips = {"jaxml ghost": clip_ghost, "jaxml vmap": clip_vmap, "jax_privacy": clip_jax_privacy}
  return params, tx, steps, clips


def check_jax_agreement(params, clips, batch):
  """Max abs diff of each clipped-gradient sum against ghost's (same params, same batch)."""
  results = {name: jax.jit(fn)(params, batch) for name, fn in clips.items()}
  reference = results["jaxml ghost"]
  out = {}
  for name, result in results.items():
    if name == "jaxml ghost":
      continue
    grad_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                    zip(jax.tree.leaves(reference.grads), jax.tree.leaves(result.grads)))
    norm_diff = float(jnp.max(jnp.abs(reference.norms - result.norms)))
    out[name] = (grad_diff, norm_diff)
  clipped_frac = float(jnp.mean(reference.norms > CLIP))
  return out, clipped_frac


def jax_runner(step, params, tx, batch):
  """A zero-argument callable running one donated step and blocking on its result."""
  compiled = jax.jit(step, donate_argnums=(0, 1, 2))
  state = {"params": jax.tree.map(jnp.copy, params), "opt": tx.init(params),
           "key": jax.random.key(0)}

  def run():
    state["params"], state["opt"], state["key"] = compiled(state["params"], state["opt"],
                                                           state["key"], batch)
    jax.block_until_ready(state["params"])

  return run


# ---------------------------------------------------------------------------------------------
# PyTorch / Opacus.


class TorchMLP(nn.Module):
  def __init__(self):
    super().__init__()
    self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))

  def forward(self, x):
    return self.net(x)


class TorchCNN(nn.Module):
  """The jaxml cnn: conv3x3 SAME -> relu -> 2x2 max pool (x2), dense 128 -> relu -> head."""

  def __init__(self):
    super().__init__()
    self.net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 32, 128), nn.ReLU(), nn.Linear(128, 10))

  def forward(self, x):
    return self.net(x)


def torch_model(model_name):
  torch.manual_seed(0)
  return TorchMLP() if model_name == "mlp" else TorchCNN()


def torch_tensors(model_name, x, y):
  xt = torch.from_numpy(x if model_name == "mlp" else np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  return xt, torch.from_numpy(y.astype(np.int64))


def torch_nonprivate_runner(model_name, xt, yt, model=None):
  model = model if model is not None else torch_model(model_name)
  optimizer = torch.optim.SGD(model.parameters(), lr=LR)
  criterion = nn.CrossEntropyLoss()

  def run():
    optimizer.zero_grad(set_to_none=True)
    criterion(model(xt), yt).backward()
    optimizer.step()

  return run


def opacus_runner(model_name, mode, xt, yt, model=None):
  """One Opacus DP-SGD step (noise SIGMA, flat clip CLIP, SGD) in grad_sample_mode `mode`."""
  model = model if model is not None else torch_model(model_name)
  optimizer = torch.optim.SGD(model.parameters(), lr=LR)
  loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt),
                                       batch_size=len(yt))
  engine = opacus.PrivacyEngine()
  made = engine.make_private(module=model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                             data_loader=loader, noise_multiplier=SIGMA, max_grad_norm=CLIP,
                             poisson_sampling=False, grad_sample_mode=mode)
  if mode == "ghost":
    dp_model, dp_optimizer, criterion, _ = made
  else:
    (dp_model, dp_optimizer, _), criterion = made, nn.CrossEntropyLoss()

  def run():
    dp_optimizer.zero_grad(set_to_none=True)
    criterion(dp_model(xt), yt).backward()
    dp_optimizer.step()

  return run


# ---------------------------------------------------------------------------------------------
# Timing.


def time_method(run, args):
  """(median s/step, steps per repeat, repeats): warm-up, calibrate, then timed repeats.

  A method whose second (warm) call takes longer than --max_step_s is not repeated: that call
  is its one timed sample (repeats printed as 1).
  """
  run()  # compile / first-call costs
  began = time.perf_counter()
  run()
  second = time.perf_counter() - began
  if second > args.max_step_s:
    return second, 1, 1
  calls, began = 0, time.perf_counter()
  while calls == 0 or time.perf_counter() - began < args.min_repeat_s / 2:  # calibration
    run()
    calls += 1
  one = (time.perf_counter() - began) / calls
  steps = max(1, min(1000, round(args.min_repeat_s / max(one, 1e-6))))
  repeats = max(3, min(args.repeats, int(args.max_seconds_per_method / (one * steps))))
  per_step = []
  for _ in range(repeats):
    began = time.perf_counter()
    for _ in range(steps):
      run()
    per_step.append((time.perf_counter() - began) / steps)
  return statistics.median(per_step), steps, repeats


def bench_cell(model_name, batch_size, args, check):
  x, y = make_batch(model_name, batch_size)
  params, tx, steps, clips = build_jax(model_name, batch_size)
  batch = jax.device_put({"image": x, "label": y})
  cell = {"model": model_name, "batch": batch_size, "ms": {}, "plan": {}, "failed": {}}
  if check:
    diffs, clipped_frac = check_jax_agreement(params, clips, batch)
    print(f"\n{model_name} B={batch_size}: clipped-sum agreement with jaxml ghost "
          f"({100 * clipped_frac:.0f}% of examples clipped at C={CLIP})")
    for name, (grad_diff, norm_diff) in diffs.items():
      print(f"  {name:<12} max |grad sum diff| {grad_diff:.2e}   max |norm diff| {norm_diff:.2e}")

  def record(name, make_run):
    try:
      run = make_run()
      seconds, n, r = time_method(run, args)
    except Exception as error:  # noqa: BLE001 -- a mode that does not work is reported, not fatal
      cell["failed"][name] = f"{type(error).__name__}: {str(error).splitlines()[0][:150]}"
      return
    cell["ms"][name] = 1000 * seconds
    cell["plan"][name] = (n, r)

  for name, step in steps.items():
    record(name, lambda step=step: jax_runner(step, params, tx, batch))
  xt, yt = torch_tensors(model_name, x, y)
  record("torch nonpriv", lambda: torch_nonprivate_runner(model_name, xt, yt))
  if opacus is not None:
    for mode in OPACUS_MODES:
      record(f"opacus {mode}", lambda mode=mode: opacus_runner(model_name, mode, xt, yt))
  time.sleep(0.5)  # let PyTorch's OpenMP workers go idle before the next JAX cell
  return cell


# ---------------------------------------------------------------------------------------------
# Report.

COLUMNS = ("jaxml ghost", "jaxml vmap", "jax_privacy", "jaxml nonpriv", "torch nonpriv",
           *(f"opacus {m}" for m in OPACUS_MODES))
SHORT = {"jaxml ghost": "jx ghost", "jaxml vmap": "jx vmap", "jax_privacy": "jax_priv",
         "jaxml nonpriv": "jx nonDP", "torch nonpriv": "pt nonDP", "opacus hooks": "op hooks",
         "opacus functorch": "op functo", "opacus ew": "op ew", "opacus ghost": "op ghost"}


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or "unknown cpu"


def print_environment(args):
  print("DP-SGD step time: jaxml (ghost / vmap clipping) vs jax_privacy clipping vs Opacus")
  print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{cpu_name()}")
  opacus_version = opacus.__version__ if opacus is not None else f"NOT INSTALLED ({OPACUS_ERROR})"
  print(f"python {platform.python_version()}, jax {jax.__version__}, jaxlib "
        f"{importlib.metadata.version('jaxlib')}, flax {importlib.metadata.version('flax')}, "
        f"optax {optax.__version__}, jax-privacy {importlib.metadata.version('jax-privacy')}, "
        f"torch {torch.__version__}, opacus {opacus_version}, numpy {np.__version__}")
  print("load average (1, 5, 15 min) at start: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
  print(f"jax devices: {jax.device_count()} x {jax.devices()[0].platform}; "
        f"torch threads: {torch.get_num_threads()}")
  for name in args.models:
    print(f"model {name}: " + (dp_sgd_models.describe(name, args)
                               if name in dp_sgd_models.MODELS else DESCRIPTION[name]))
  print(f"sizes: batches {args.batches}, float32, clip C={CLIP}, noise multiplier {SIGMA}, "
        f"SGD lr {LR}; noise scaled by the batch size (noisy_mean); up to {args.repeats} timed "
        f"repeats per method after 2 warm-up steps and a calibration, each repeat >= "
        f"{args.min_repeat_s}s of steps, at most ~{args.max_seconds_per_method}s per method "
        f"(min 3 repeats; one timed "
        f"step if a step takes > {args.max_step_s}s); medians")


def ratio(cell, a, b):
  ms = cell["ms"]
  return ms[a] / ms[b] if a in ms and b in ms else float("nan")


def print_table(cells):
  present = [c for c in COLUMNS if any(c in cell["ms"] or c in cell["failed"] for cell in cells)]
  print("\nms/step (median)")
  print(f"{'model':<5} {'B':>5} " + " ".join(f"{SHORT[c]:>9}" for c in present))
  for cell in cells:
    row = []
    for c in present:
      once = "*" if c in cell["plan"] and cell["plan"][c][1] == 1 else ""
      row.append(f"{cell['ms'][c]:>{9 - len(once)}.3f}{once}" if c in cell["ms"] else
                 f"{'FAIL' if c in cell['failed'] else '-':>9}")
    print(f"{cell['model']:<5} {cell['batch']:>5} " + " ".join(row))

  print("  * one timed step (slower than --max_step_s), after a warm-up step")
  print("\nRatios (time / time; goals from issue 4)")
  print(f"{'model':<5} {'B':>5} {'DP/nonDP':>9} {'goal':>6} {'vmap/ghost':>10} "
        f"{'jaxpriv/DP':>10} {'best opacus':>16} {'opacus/DP':>9} {'goal':>6} "
        f"{'ptnonDP/jxnonDP':>15}")
  for cell in cells:
    dp_goal, opacus_goal = GOALS[cell["model"]]
    opacus_ms = {c: v for c, v in cell["ms"].items() if c.startswith("opacus")}
    best = min(opacus_ms, key=opacus_ms.get) if opacus_ms else None
    dp_ratio = ratio(cell, "jaxml ghost", "jaxml nonpriv")
    opacus_ratio = ratio(cell, best, "jaxml ghost") if best else float("nan")
    dp_mark = (f"<={dp_goal}" + ("ok" if dp_ratio <= dp_goal else "NO")) \
        if cell["batch"] >= 256 else "-"
    op_mark = (f">={opacus_goal}" + ("ok" if opacus_ratio >= opacus_goal else "NO")) \
        if opacus_goal and best else "-"
    print(f"{cell['model']:<5} {cell['batch']:>5} {dp_ratio:>9.2f} {dp_mark:>6} "
          f"{ratio(cell, 'jaxml vmap', 'jaxml ghost'):>10.2f} "
          f"{ratio(cell, 'jax_privacy', 'jaxml ghost'):>10.2f} "
          f"{(best or '-').replace('opacus ', ''):>16} {opacus_ratio:>9.2f} {op_mark:>6} "
          f"{ratio(cell, 'torch nonpriv', 'jaxml nonpriv'):>15.2f}")
  print("  DP = jaxml ghost step; vmap/ghost = jaxml's vmap path over its ghost path; "
        "jaxpriv/DP = jax_privacy.clipped_grad step over jaxml ghost; opacus/DP = Opacus's "
        "fastest mode in that row over jaxml ghost (> 1: jaxml faster)")

  print("\nSteps per repeat x repeats used")
  for cell in cells:
    print(f"{cell['model']:<5} {cell['batch']:>5} " + "  ".join(
        f"{SHORT[c].strip()} {n}x{r}" for c, (n, r) in cell["plan"].items()))
  failures = [(cell, c, why) for cell in cells for c, why in cell["failed"].items()]
  if failures:
    print("\nFailed methods")
    for cell, c, why in failures:
      print(f"  {cell['model']} B={cell['batch']} {c}: {why}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="mlp,cnn",
                      help="comma-separated: mlp, cnn, resnet_gn, transformer")
  parser.add_argument("--batches", default="64,256,1024", help="comma-separated batch sizes")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--min_repeat_s", type=float, default=0.1,
                      help="steps per repeat are chosen so one repeat takes about this long")
  parser.add_argument("--max_seconds_per_method", type=float, default=3.0,
                      help="fewer repeats (min 3) for methods whose repeats would take longer")
  parser.add_argument("--max_step_s", type=float, default=8.0,
                      help="a method slower than this per step is timed once (after warm-up)")
  dp_sgd_models.add_arguments(parser)
  args = parser.parse_args(argv)
  args.models = [m.strip() for m in args.models.split(",") if m.strip()]
  args.batches = [int(b) for b in args.batches.split(",")]
  known = (*MODEL_CONFIGS, *dp_sgd_models.MODELS)
  if any(m not in known for m in args.models):
    parser.error(f"--models must be among {known}, got {args.models}")
  if any(b <= 0 for b in args.batches) or args.repeats < 1:
    parser.error("--batches must be positive and --repeats >= 1")
  torch.set_num_threads(2)
  began = time.perf_counter()
  print_environment(args)
  # What dp_sgd_models times with: this file's step settings, timing and PyTorch runners.
  host = argparse.Namespace(CLIP=CLIP, SIGMA=SIGMA, LR=LR, time_method=time_method,
                            jax_runner=jax_runner, torch_nonprivate_runner=torch_nonprivate_runner,
                            opacus_runner=opacus_runner, opacus=opacus)
  cells, model_cells = [], []
  for model_name in args.models:
    for i, batch_size in enumerate(args.batches):
      if model_name in dp_sgd_models.MODELS:
        model_cells.append(dp_sgd_models.bench_cell(model_name, batch_size, args, host))
      else:
        cells.append(bench_cell(model_name, batch_size, args, check=i == 0))
  if cells:
    print_table(cells)
  if model_cells:
    dp_sgd_models.print_table(model_cells)
  print("\nload average (1, 5, 15 min) at end: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
  print(f"total wall time {time.perf_counter() - began:.0f} s")
  return cells + model_cells


if __name__ == "__main__":
  main(sys.argv[1:])
