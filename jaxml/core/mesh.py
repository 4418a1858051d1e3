"""The device mesh and the shardings every run uses.

Axis-type mode for the whole project: **Auto**. Data parallelism is jit over global arrays
sharded on the `data` axis with explicit in/out shardings; XLA inserts the gradient
all-reduce. `jax.shard_map` is used only where a collective is the point (e.g. SupCon's
all-gather), and works on the same Auto mesh.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from orbax.checkpoint import multihost as orbax_multihost
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxml.errors import ConfigError

DATA_AXIS = "data"
# How long `connect_processes` waits for the slowest process (e.g. one still reading a
# checkpoint from remote storage) before the run fails.
CONNECT_TIMEOUT_S = 600
_CONNECTIONS = itertools.count()


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D `data` mesh over all devices, or over the first `num_devices` (single process).
  Multi-host, the processes are connected first (`connect_processes`)."""
  total = jax.device_count()
  if num_devices in (0, None) or num_devices == total:
    mesh = jax.make_mesh((total,), (DATA_AXIS,), axis_types=(AxisType.Auto,))
    if jax.process_count() > 1:
      connect_processes(mesh)
    return mesh
  if jax.process_count() > 1:
    raise ConfigError(f"num_devices={num_devices}: a multi-host run uses all {total} devices;"
                      " leave num_devices at 0")
  if not 0 < num_devices <= total:
    raise ConfigError(f"num_devices={num_devices}: this machine has {total} devices")
  devices = np.array(jax.devices()[:num_devices])
  return Mesh(devices, (DATA_AXIS,), axis_types=(AxisType.Auto,))


def connect_processes(mesh: Mesh, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
  """Puts every process in step, then runs one collective over the mesh's devices.

  On CPU, XLA's gloo collectives connect the devices at the first collective over them, and
  each process has 30 s (fixed) to arrive there. A process still compiling its first train
  step (tens of seconds on a loaded host) then fails the whole run. The coordination
  service's barrier waits `timeout_s`, and the collective run right after it makes the
  connection that every later collective over these devices reuses.
  """
  name = f"jaxml_connect_{next(_CONNECTIONS)}"  # a barrier's name is used once
  orbax_multihost.sync_global_processes(name, timeout=int(timeout_s))
  # A jitted collective: jax.experimental.multihost_utils' barriers do not make this connection.
  ones = jax.make_array_from_callback((mesh.devices.size,), data_sharding(mesh),
                                      lambda index: np.ones(1, np.int32))
  total = jax.jit(jnp.sum, out_shardings=replicated(mesh))(ones)
  if int(total.addressable_data(0)) != mesh.devices.size:  # every device took part
    raise RuntimeError(f"the processes' devices did not connect: {int(total.addressable_data(0))}"
                       f" of {mesh.devices.size} answered")


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over `data`; other dimensions replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def local_batch_size(mesh: Mesh, global_batch_size: int, what: str = "batch_size") -> int:
  """This process's share of a global batch; the global batch must split evenly."""
  devices = mesh.devices.size
  if global_batch_size <= 0 or global_batch_size % devices:
    raise ConfigError(f"{what}={global_batch_size} is not divisible by the device count "
                      f"({devices}); use a multiple of {devices}")
  return global_batch_size // jax.process_count()


def to_global(mesh: Mesh, local: dict[str, np.ndarray], global_batch_size: int) -> dict:
  """Assembles each host's slice into global arrays sharded on `data`."""
  sharding = data_sharding(mesh)
  # An explicit transfer, as device_put's is: allowed also where the training loop disallows
  # implicit ones (batches built inline, jaxml.data.pipeline.Prefetcher).
  with jax.transfer_guard_host_to_device("allow"):
    if jax.process_count() == 1:  # the local data is the global batch
      # Each device's rows put directly: about half the host time of `jax.device_put` on the
      # dict (~160 vs ~330 us for two fields on CPU), paid every training step.
      return {k: jax.make_array_from_callback(np.shape(v), sharding, np.asarray(v).__getitem__)
              for k, v in local.items()}
    return {k: jax.make_array_from_process_local_data(
        sharding, v, (global_batch_size,) + v.shape[1:]) for k, v in local.items()}
