"""The run's mesh and shardings on 8 simulated devices: which devices, which rows where."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxml.core import mesh as mesh_lib
from jaxml.errors import ConfigError
from tests.launch_utils import REPO, free_port, launcher_env


def test_make_mesh_spans_all_devices_or_the_first_n():
  assert jax.device_count() == 8  # tests/conftest.py
  full = mesh_lib.make_mesh()
  assert full.axis_names == ("data",) and full.axis_types == (AxisType.Auto,)
  assert list(full.devices.flat) == jax.devices()
  assert list(mesh_lib.make_mesh(8).devices.flat) == jax.devices()
  four = mesh_lib.make_mesh(4)
  assert four.shape == {"data": 4} and four.axis_types == (AxisType.Auto,)
  assert list(four.devices.flat) == jax.devices()[:4]
  assert list(mesh_lib.make_mesh(1).devices.flat) == jax.devices()[:1]


@pytest.mark.parametrize("num_devices", [9, -1])
def test_make_mesh_refuses_more_devices_than_there_are(num_devices):
  with pytest.raises(ConfigError, match=f"num_devices={num_devices}: this machine has 8 devices"):
    mesh_lib.make_mesh(num_devices)


def test_local_batch_size_needs_a_multiple_of_the_device_count():
  mesh = mesh_lib.make_mesh()
  assert mesh_lib.local_batch_size(mesh, 64) == 64  # one process holds the whole batch
  for bad in (12, 0, -8):
    with pytest.raises(ConfigError) as err:
      mesh_lib.local_batch_size(mesh, bad, "eval_batch_size")
    assert str(err.value) == (f"eval_batch_size={bad} is not divisible by the device count (8); "
                              "use a multiple of 8")
  # The device count is the mesh's, not the machine's.
  assert mesh_lib.local_batch_size(mesh_lib.make_mesh(4), 12) == 12
  with pytest.raises(ConfigError, match=r"batch_size=6 .* \(4\); use a multiple of 4"):
    mesh_lib.local_batch_size(mesh_lib.make_mesh(4), 6)


def test_to_global_splits_rows_over_devices_and_round_trips():
  mesh = mesh_lib.make_mesh()
  rng = np.random.default_rng(0)
  local = {"image": rng.normal(size=(16, 3, 2)).astype(np.float32),
           "label": np.arange(16, dtype=np.int32)}
  batch = mesh_lib.to_global(mesh, local, 16)
  assert batch.keys() == local.keys()
  for name, array in batch.items():
    assert array.sharding == mesh_lib.data_sharding(mesh)
    assert array.sharding.spec == P("data")
    np.testing.assert_array_equal(np.asarray(array), local[name])  # the round trip
    # Device i holds rows [2i, 2i + 2): the leading axis split in device order.
    shards = sorted(array.addressable_shards, key=lambda s: jax.devices().index(s.device))
    assert len(shards) == 8
    for i, shard in enumerate(shards):
      np.testing.assert_array_equal(np.asarray(shard.data), local[name][2 * i:2 * i + 2])
  # A jitted reduction over the sharded batch equals NumPy's on the host copy.
  total = jax.jit(lambda b: jnp.sum(b["image"], axis=0))(batch)
  np.testing.assert_allclose(total, local["image"].sum(0), rtol=1e-5)


def test_to_global_on_a_smaller_mesh_uses_only_its_devices():
  mesh = mesh_lib.make_mesh(2)
  local = {"x": np.arange(8, dtype=np.float32).reshape(4, 2)}
  x = mesh_lib.to_global(mesh, local, 4)["x"]
  assert {s.device for s in x.addressable_shards} == set(jax.devices()[:2])
  np.testing.assert_array_equal(np.asarray(x), local["x"])


def test_replicated_puts_the_whole_array_on_every_device():
  mesh = mesh_lib.make_mesh()
  value = np.arange(6.0).reshape(2, 3)
  x = jax.device_put(value, mesh_lib.replicated(mesh))
  assert x.sharding.spec == P() and x.sharding.is_fully_replicated
  assert len(x.addressable_shards) == 8
  for shard in x.addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), value)


# Two processes x 4 devices. Each waits longer than gloo's fixed 30 s for a peer at its first
# collective: process 0 before the mesh (the barrier must wait for it), process 1 after it
# (the connection the mesh made must be the one its first own collective uses).
_LATE_PROCESSES = """
import sys, time
import jax, numpy as np
from jaxml.core import mesh as mesh_lib
process = int(sys.argv[2])
jax.distributed.initialize(sys.argv[1], 2, process)
if process == 0:
  time.sleep(33)
mesh = mesh_lib.make_mesh()
if process == 1:
  time.sleep(33)
rows = jax.make_array_from_callback((8,), mesh_lib.data_sharding(mesh),
                                    lambda index: np.arange(8)[index])
gathered = jax.jit(lambda x: 10 * x, out_shardings=mesh_lib.replicated(mesh))(rows)
print(np.asarray(gathered.addressable_data(0)).tolist())
"""


def test_multi_host_mesh_waits_for_late_processes_and_connects_their_devices():
  coordinator = f"127.0.0.1:{free_port()}"
  procs = [subprocess.Popen([sys.executable, "-c", _LATE_PROCESSES, coordinator, str(i)],
                            cwd=REPO, env=launcher_env(devices=4), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    assert out.splitlines()[-1] == "[0, 10, 20, 30, 40, 50, 60, 70]"  # gloo prints above it
