"""SupCon loss + gradient: jaxml sharded over 8 devices, on one device, and PyTorch, in one run.

Same work for all three: the SupCon loss (L_out, contrast_mode="all") of L2-normalised
features [B, V, D] with labels in C classes, and its gradient w.r.t. the features.
  (a) jaxml `supcon_loss_on_mesh` on an 8-device `data` mesh: each device contrasts its
      B/8 local anchors against the all-gathered global batch;
  (b) jaxml `supcon_loss_on_mesh` on a 1-device mesh (the same code, a trivial gather);
  (c) PyTorch autograd on benchmarks/supcon_torch_reference.py (SupContrast's recipe).
Every step is checked to agree with jaxml's single-device `supcon_loss` (loss and gradient,
max abs diff <= 1e-4) before anything is timed.

Time: median wall time of one loss+gradient call over --repeats, each method's repeats run
back to back after a warm-up call of its own. JAX calls are AOT-compiled executables with
block_until_ready. The 8 devices are simulated on this machine's CPU cores
(XLA_FLAGS=--xla_force_host_platform_device_count=8, set below before jax is imported), so
(a) shows the cost of splitting the work, not a speed-up.
Memory: JAX from the compiled executable's memory_analysis() (temp + argument + output bytes,
which for the SPMD executable is one device's share); PyTorch from torch.profiler
(profile_memory=True): the peak of the running sum of allocations during one call, plus the
input tensors that were allocated before it.

  python benchmarks/supcon.py [--batches 256,1024,4096 --repeats 7 --views 2 --dim 128]
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from jaxml.core import mesh as mesh_lib  # noqa: E402
from jaxml.losses.supcon import supcon_loss, supcon_loss_on_mesh  # noqa: E402

try:
  from benchmarks import supcon_torch_reference as torch_reference  # python -m benchmarks.supcon
except ImportError:
  import supcon_torch_reference as torch_reference  # python benchmarks/supcon.py

TOLERANCE = 1e-4
MB = 2**20


def make_inputs(batch: int, views: int, dim: int, classes: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  features = rng.standard_normal((batch, views, dim)).astype(np.float32)
  features /= np.linalg.norm(features, axis=-1, keepdims=True)
  labels = rng.integers(0, classes, batch).astype(np.int32)
  return features, labels


def compile_jax(loss_fn, mesh, features, labels):
  """AOT-compiled loss-and-gradient on `mesh`, inputs placed batch-sharded on it."""
  sharding = mesh_lib.data_sharding(mesh)
  features, labels = jax.device_put((features, labels), sharding)
  with jax.set_mesh(mesh):
    compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(features, labels).compile()
  return compiled, (features, labels)


def jax_memory(compiled) -> int:
  """Bytes one device needs for the executable: temporaries + arguments + outputs."""
  stats = compiled.memory_analysis()
  return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


def run_jax(compiled, args):
  loss, grad = compiled(*args)
  return jax.block_until_ready((loss, grad))


def run_torch(features: torch.Tensor, labels: torch.Tensor, loss_kwargs: dict):
  leaf = features.detach().requires_grad_()
  loss = torch_reference.supcon_loss(leaf, labels, **loss_kwargs)
  loss.backward()
  return loss.detach(), leaf.grad


@contextlib.contextmanager
def _quiet_stderr():
  """Kineto prints profiler start/stop lines from C++ straight to fd 2; drop them."""
  sys.stderr.flush()
  saved = os.dup(2)
  with open(os.devnull, "w") as devnull:
    os.dup2(devnull.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def torch_peak_memory(features, labels, loss_kwargs) -> int:
  """Peak bytes of one call: inputs + the running sum of allocations while profiled."""
  with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
    result = run_torch(features, labels, loss_kwargs)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "trace.json")
    prof.export_chrome_trace(path)
    with open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  deltas = sorted((e["ts"], e["args"]["Bytes"]) for e in events if e.get("name") == "[memory]")
  if not deltas:
    raise RuntimeError("torch.profiler recorded no memory events")
  running = np.cumsum([d for _, d in deltas])
  del result
  return int(features.nbytes + labels.nbytes + max(running.max(), 0))


def check_agreement(name, reference, result):
  """Max abs diff of loss and gradient against jaxml's single-device supcon_loss."""
  loss_diff = abs(float(reference[0]) - float(result[0]))
  grad_diff = float(np.max(np.abs(np.asarray(reference[1]) - np.asarray(result[1]))))
  print(f"  {name:<28} |loss diff| {loss_diff:.2e}   max |grad diff| {grad_diff:.2e}")
  if not (loss_diff <= TOLERANCE and grad_diff <= TOLERANCE):
    raise SystemExit(f"FAIL: {name} disagrees with jaxml supcon_loss by more than {TOLERANCE}")
  return loss_diff, grad_diff


def bench_batch(batch, args, meshes, loss_kwargs):
  features_np, labels_np = make_inputs(batch, args.views, args.dim, args.classes)
  features_t, labels_t = torch.from_numpy(features_np), torch.from_numpy(labels_np)

  def on_mesh(features, labels):
    return supcon_loss_on_mesh(features, labels, **loss_kwargs)

  def single(features, labels):
    return supcon_loss(features, labels, **loss_kwargs)

  compiled = {}
  compile_seconds = {}
  for name, loss_fn, mesh in (("sharded", on_mesh, meshes[8]), ("one_device", on_mesh, meshes[1]),
                              ("reference", single, meshes[1])):
    began = time.perf_counter()
    compiled[name] = compile_jax(loss_fn, mesh, features_np, labels_np)
    compile_seconds[name] = time.perf_counter() - began

  reference = run_jax(*compiled["reference"])
  print(f"\nB={batch}: loss {float(reference[0]):.6f}; agreement with jaxml supcon_loss "
        "(single device, no mesh)")
  methods = {
      "sharded": lambda: run_jax(*compiled["sharded"]),
      "one_device": lambda: run_jax(*compiled["one_device"]),
      "torch": lambda: run_torch(features_t, labels_t, loss_kwargs),
  }
  titles = {"sharded": "jaxml on 8-device mesh", "one_device": "jaxml on 1-device mesh",
            "torch": "PyTorch reference"}
  for name, fn in methods.items():
    check_agreement(titles[name], reference, fn())

  # One method at a time, not interleaved: PyTorch's OpenMP workers keep spinning for a while
  # after a call and slow a JAX call that follows at once (measured ~1.6x at B=256 here).
  times = {name: [] for name in methods}
  for name, fn in methods.items():
    fn()  # warm-up, right before this method's repeats
    for _ in range(args.repeats):
      began = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - began)

  memory = {"sharded": jax_memory(compiled["sharded"][0]),
            "one_device": jax_memory(compiled["one_device"][0]),
            "torch": torch_peak_memory(features_t, labels_t, loss_kwargs)}
  return {"batch": batch, "loss": float(reference[0]),
          "median_s": {k: statistics.median(v) for k, v in times.items()},
          "range_s": {k: (min(v), max(v)) for k, v in times.items()},
          "memory": memory, "compile_s": compile_seconds}


def print_environment(args):
  print("SupCon loss + gradient w.r.t. features: jaxml (sharded / one device) vs PyTorch")
  print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPU cores")
  print(f"python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {importlib.metadata.version('jaxlib')}, torch {torch.__version__}, "
        f"numpy {np.__version__}")
  print("load average (1, 5, 15 min) at start: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
  print(f"jax devices: {jax.device_count()} x {jax.devices()[0].platform} (simulated); "
        f"torch threads: {torch.get_num_threads()}")
  print(f"sizes: batches {args.batches}, views {args.views}, dim {args.dim}, "
        f"classes {args.classes}, float32, temperature {args.temperature}, base temperature "
        f"{args.base_temperature}, contrast_mode all, L_out; {args.repeats} timed repeats "
        "per method after its warm-up, medians")


def print_table(results, args):
  print("\nTimes (median s per loss+grad call) and ratios")
  print(f"{'B':>5} {'N=V*B':>6} {'8-dev (a)':>10} {'1-dev (b)':>10} {'torch (c)':>10} "
        f"{'a/b':>6} {'b/c':>6} {'a/c':>6}")
  for r in results:
    t = r["median_s"]
    print(f"{r['batch']:>5} {r['batch'] * args.views:>6} {t['sharded']:>10.4f} "
          f"{t['one_device']:>10.4f} {t['torch']:>10.4f} {t['sharded'] / t['one_device']:>6.2f} "
          f"{t['one_device'] / t['torch']:>6.2f} {t['sharded'] / t['torch']:>6.2f}")
  print("\nSpread of the repeats (min - max s)")
  for r in results:
    print(f"{r['batch']:>5} " + "   ".join(
        f"{name} {low:.4f} - {high:.4f}" for name, (low, high) in r["range_s"].items()))
  print("\nPeak memory (MiB). JAX: memory_analysis temp+arg+out; torch: profiler peak + inputs;"
        " N x N f32: one similarity matrix")
  print(f"{'B':>5} {'NxN f32':>8} {'8-dev/dev':>10} {'8-dev tot':>10} {'1-dev':>8} "
        f"{'torch':>8} {'a_dev/b':>8} {'a_tot/b':>8} {'b/c':>6}")
  devices = 8
  for r in results:
    m, n = r["memory"], r["batch"] * args.views
    print(f"{r['batch']:>5} {4 * n * n / MB:>8.1f} {m['sharded'] / MB:>10.1f} "
          f"{devices * m['sharded'] / MB:>10.1f} {m['one_device'] / MB:>8.1f} "
          f"{m['torch'] / MB:>8.1f} {m['sharded'] / m['one_device']:>8.3f} "
          f"{devices * m['sharded'] / m['one_device']:>8.3f} {m['one_device'] / m['torch']:>6.2f}")
  print("\nCompile time (s, not timed above): "
        + "; ".join(f"B={r['batch']}: 8-dev {r['compile_s']['sharded']:.1f}, "
                    f"1-dev {r['compile_s']['one_device']:.1f}" for r in results))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="256,1024,4096",
                      help="global batch sizes, comma-separated; multiples of 8")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--views", type=int, default=2)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--temperature", type=float, default=0.1)
  parser.add_argument("--base_temperature", type=float, default=0.07)
  args = parser.parse_args(argv)
  args.batches = [int(b) for b in args.batches.split(",")]
  if any(b <= 0 or b % 8 for b in args.batches):
    parser.error(f"--batches must be positive multiples of 8, got {args.batches}")
  if args.repeats < 1:
    parser.error("--repeats must be >= 1")
  if jax.device_count() < 8:
    raise SystemExit(f"need 8 JAX devices, got {jax.device_count()}: was jax imported before "
                     "XLA_FLAGS was set?")
  torch.set_num_threads(os.cpu_count())
  meshes = {8: mesh_lib.make_mesh(8), 1: mesh_lib.make_mesh(1)}
  loss_kwargs = {"temperature": args.temperature, "base_temperature": args.base_temperature}
  print_environment(args)
  results = [bench_batch(b, args, meshes, loss_kwargs) for b in args.batches]
  print_table(results, args)
  print("load average (1, 5, 15 min) at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
