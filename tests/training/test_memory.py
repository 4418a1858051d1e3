"""The batch memory estimate: an impossible batch size is refused before anything compiles."""

import os

import ml_collections
import pytest

from jaxml.core import mesh as mesh_lib
from jaxml.data.base import Field
from jaxml.errors import ConfigError
from jaxml.training import memory
from tests.launch_utils import run_launcher

DIGITS = {"image": Field((8, 8, 1), "float32"), "label": Field((), "int32")}


def test_example_bytes_counts_every_field_and_the_mask():
  assert memory.example_bytes(DIGITS) == 8 * 8 * 4 + 4 + memory.MASK_BYTES
  assert memory.example_bytes({"v": Field((3, 2), "uint8"), "b": Field((), "bool")}) == 6 + 1 + 4


def test_input_bytes_per_device_and_host():
  per_example = memory.example_bytes(DIGITS)
  # 8 devices on one host, 3 batches in flight: each device holds 3 shards of 16 examples.
  device, host = memory.input_bytes(DIGITS, 128, 8, 1, copies=3, cpu=False)
  assert device == 16 * per_example * 3 and host == 128 * per_example
  # On CPU the devices' memory is host RAM: the host gather plus all 8 devices' copies.
  _, host_cpu = memory.input_bytes(DIGITS, 128, 8, 1, copies=3, cpu=True)
  assert host_cpu == 128 * per_example + 8 * device
  # Two hosts: each gathers half the batch and holds its 4 devices' shards.
  device2, host2 = memory.input_bytes(DIGITS, 128, 8, 2, copies=1, cpu=True)
  assert device2 == 16 * per_example and host2 == 64 * per_example + 4 * device2


def test_host_available_bytes_is_plausible():
  available = memory.host_available_bytes()
  assert available is not None and 0 < available <= os.sysconf("SC_PAGE_SIZE") * os.sysconf(
      "SC_PHYS_PAGES")


def _config(batch_size, eval_batch_size=8):
  return ml_collections.ConfigDict({"batch_size": batch_size, "eval_batch_size": eval_batch_size,
                                    "data": {"prefetch": 2}})


def test_check_batch_memory_refuses_what_cannot_fit_and_accepts_smoke_sizes():
  mesh = mesh_lib.make_mesh(8)
  memory.check_batch_memory(_config(64), DIGITS, mesh)
  with pytest.raises(ConfigError, match=r"^batch_size=1000000000 needs ~\d+\.\d GiB .* inputs "
                                        r"alone.*; this host has \d+\.\d GiB available"):
    memory.check_batch_memory(_config(10**9), DIGITS, mesh)
  with pytest.raises(ConfigError, match=r"^eval_batch_size=8000000000 needs"):
    memory.check_batch_memory(_config(64, 8 * 10**9), DIGITS, mesh)


class _Device:
  """A stand-in accelerator that reports 1 GiB of memory."""

  platform, device_kind = "gpu", "fake GPU"

  def memory_stats(self):
    return {"bytes_limit": memory.GIB}


def test_check_batch_memory_uses_the_devices_own_limit(monkeypatch):
  monkeypatch.setattr(memory.jax, "local_devices", lambda: [_Device()])
  mesh = mesh_lib.make_mesh(8)
  # 2**20 examples of 264 bytes over 8 devices, 3 in flight: ~0.1 GiB per device: fits.
  memory.check_batch_memory(_config(2**20), DIGITS, mesh)
  # 2**24 examples: ~0.5 GiB per device per batch, 3 in flight: does not.
  with pytest.raises(ConfigError, match=r"batch_size=16777216 needs ~1\.5 GiB per device for its "
                                        r"inputs alone \(3 batch\(es\) in flight\); this device "
                                        r"\(fake GPU\) has 1\.0 GiB"):
    memory.check_batch_memory(_config(2**24), DIGITS, mesh)


def test_a_billion_batch_through_the_launcher_exits_2_before_compiling(tmp_path):
  proc = run_launcher("experiments/classifier.py:smoke", tmp_path, "--config.batch_size=1000000000")
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: batch_size=1000000000 needs ~"), lines
  checkpoints = tmp_path / "checkpoints"
  assert not checkpoints.exists() or not os.listdir(checkpoints)
