"""Running the real launcher in a subprocess, and reading what it left in a workdir."""

from __future__ import annotations

import glob
import importlib
import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A local TCP port free now (e.g. for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launcher_env(devices: int = 8) -> dict:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def launch_cmd(config: str, workdir, *overrides: str) -> list[str]:
  return [sys.executable, "-m", "launch.main", f"--config={config}", f"--workdir={workdir}",
          "--config.progress=False", *overrides]


def run_launcher(config: str, workdir, *overrides: str, devices: int = 8,
                 timeout: float = 600) -> subprocess.CompletedProcess:
  return subprocess.run(launch_cmd(config, workdir, *overrides), cwd=REPO,
                        env=launcher_env(devices), capture_output=True, text=True,
                        timeout=timeout, check=False)


def start_launcher(config: str, workdir, *overrides: str, devices: int = 8) -> subprocess.Popen:
  return subprocess.Popen(launch_cmd(config, workdir, *overrides), cwd=REPO,
                          env=launcher_env(devices), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def last_logged_step(workdir) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return -1
  with open(path, encoding="utf-8") as f:
    lines = [l for l in f.read().splitlines() if l.endswith("}")]
  return json.loads(lines[-1])["step"] if lines else -1


def wait_for_step(proc: subprocess.Popen, workdir, step: int, timeout: float = 300) -> int:
  """Polls metrics.jsonl until `step` is logged; returns the logged step."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    logged = last_logged_step(workdir)
    if logged >= step:
      return logged
    if proc.poll() is not None:
      raise AssertionError(f"run ended before step {step}: {proc.stderr.read()[-2000:]}")
    time.sleep(0.01)
  raise AssertionError(f"step {step} not reached in {timeout}s")


def checkpoint_steps(workdir) -> list[int]:
  ckpt = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())


def restore_arrays(workdir, step: int | None = None) -> dict[str, np.ndarray]:
  """Every array of a saved train state, flattened to {path: array}, read without a target."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  step = checkpoint_steps(workdir)[-1] if step is None else step
  path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "default")
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  # Restored onto one local device, so checkpoints from any topology can be compared.
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
                        metadata)
  tree = checkpointer.restore(path, target)
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def assert_same_arrays(a: dict, b: dict, exact: bool = True, rtol: float = 1e-5,
                       atol: float = 1e-6) -> None:
  assert a.keys() == b.keys()
  for key in a:
    if exact:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    else:
      np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


def flip_one_bit(step_dir, mask: int = 0x01) -> None:
  """Flips one bit in the middle of a checkpoint step's largest array-data file: damage that
  Orbax alone would load without noticing."""
  root = os.path.join(step_dir, "default", "d")
  path = max((os.path.join(root, f) for f in os.listdir(root)), key=os.path.getsize)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ mask]))


def _asked_config(experiment: str) -> dict:
  """The experiment file's smoke config with the command line's override, as JSON."""
  module = importlib.import_module(experiment[:-len(".py")].replace("/", "."))
  config = module.get_config("smoke")
  assert config.progress, "the override below must change the config to show up"
  config.progress = False  # launch_cmd passes --config.progress=False
  return json.loads(config.to_json_best_effort())


def assert_config_and_headline(experiment, proc, workdir):
  """config.json is what was asked; the `final` line prints summary.json's scores."""
  assert json.load(open(workdir / "config.json")) == _asked_config(experiment)
  summary = json.load(open(workdir / "artifacts" / "summary.json"))
  finals = [l for l in proc.stdout.splitlines() if l.startswith("final ")]
  assert len(finals) == 1, proc.stdout[-3000:]
  headline = dict(pair.rsplit("=", 1) for pair in finals[0][len("final "):].split())
  # The algorithm's (or study's) headline metrics, in its order: those the run computed.
  assert list(headline) == [k for k in summary["headline"]
                            if isinstance(summary.get(k), float)] and headline
  for name, printed in headline.items():
    assert printed == f"{summary[name]:.4f}", (name, proc.stdout[-3000:])
  assert f"outputs: {workdir} (" in proc.stdout


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def tfevents(workdir):
  """Every event of the TensorBoard event files in `workdir`, oldest file first, read from
  the raw TFRecord framing (no TensorFlow)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  for path in sorted(glob.glob(os.path.join(str(workdir), "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      yield event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4


def tensorboard_hparams(workdir) -> dict:
  """The hparams of the newest session the event files of `workdir` start, by name, as
  their plain values (str, bool or float)."""
  from tensorboardX.proto import plugin_hparams_pb2  # pylint: disable=import-outside-toplevel
  found = {}
  for event in tfevents(workdir):
    for value in event.summary.value:
      if value.tag == "_hparams_/session_start_info":
        data = plugin_hparams_pb2.HParamsPluginData.FromString(
            value.metadata.plugin_data.content)
        found = {name: getattr(v, v.WhichOneof("kind"))
                 for name, v in data.session_start_info.hparams.items()}
  return found


def assert_rerun_trains_nothing(experiment: str, workdir) -> None:
  """Runs `experiment` again on a finished study's `workdir`: it succeeds and no file under
  runs/ is written again."""
  runs_dir = os.path.join(workdir, "runs")
  stamps = lambda: {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
                    for d, _, names in os.walk(runs_dir) for f in names}
  before = stamps()
  assert before, f"no runs under {runs_dir}"
  proc = run_launcher(experiment, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert stamps() == before


def load_benchmark(name: str):
  """The module `benchmarks/<name>.py`, imported from its file (benchmarks is no package)."""
  spec = importlib.util.spec_from_file_location(
      f"{name}_benchmark", os.path.join(REPO, "benchmarks", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
