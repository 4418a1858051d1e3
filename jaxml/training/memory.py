"""The memory a batch's inputs need, estimated before compiling: an impossible batch size is one
line (exit 2) instead of the kernel's out-of-memory killer minutes later.

The estimate counts only what is certain from the source's description and the pipeline, never
a guess at the model's activations (those depend on the model; XLA reports them itself, cleanly,
when they do not fit). It is therefore a lower bound: a batch refused here cannot run, and one
accepted may still not.

- Per device: its shard of the global batch (`batch_size / devices` examples, each the bytes of
  every declared field plus the pipeline's float32 `mask`), held `1 + data.prefetch` times for a
  training batch (the batch in use and the prefetcher's queue, whose batches are already device
  arrays; `jaxml.data.pipeline.Prefetcher`) and once for an evaluation batch.
- Per host: the pipeline gathers this host's share of the global batch into one NumPy array
  before placing it (`pipeline.train_batch`), so that share is in host RAM once more. On the CPU
  backend the devices' memory is host RAM as well, so host and device copies add up.

Device memory is `memory_stats()["bytes_limit"]` where the backend reports it (GPU, TPU); host
memory is what the kernel says is available (MemAvailable, capped by a cgroup limit).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np

from jaxml.data.base import Field
from jaxml.errors import ConfigError

GIB = 1 << 30
MASK_BYTES = 4  # the float32 `mask` the pipeline may add to every example


def example_bytes(fields: Mapping[str, Field]) -> int:
  """Bytes of one example as the pipeline batches it."""
  return MASK_BYTES + sum(int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
                          for spec in fields.values())


def input_bytes(fields: Mapping[str, Field], batch_size: int, devices: int, processes: int,
                copies: int, cpu: bool) -> tuple[int, int]:
  """(bytes per device, bytes of host RAM per host) for a global batch held `copies` times."""
  per_example = example_bytes(fields)
  per_device = batch_size // devices * per_example * copies
  local_devices = devices // processes
  host = batch_size // processes * per_example + (per_device * local_devices if cpu else 0)
  return per_device, host


def host_available_bytes() -> int | None:
  """Host RAM the kernel would give this process now, or None where it cannot be read."""
  available = None
  try:
    with open("/proc/meminfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          available = int(line.split()[1]) * 1024
  except OSError:
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
  try:  # a container's limit is what the OOM killer enforces
    with open("/sys/fs/cgroup/memory.max", encoding="utf-8") as f:
      limit = f.read().strip()
    with open("/sys/fs/cgroup/memory.current", encoding="utf-8") as f:
      used = int(f.read().strip())
    if limit.isdigit():
      available = min(available or int(limit), int(limit) - used)
  except (OSError, ValueError):
    pass
  return available


def device_bytes_limit(device) -> int | None:
  """The device's memory, where its backend reports it (GPU, TPU; not CPU)."""
  stats = device.memory_stats()
  return int(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None


def check_batch_memory(config, fields: Mapping[str, Field], mesh) -> None:
  """Raises ConfigError if the train or eval batch's inputs alone exceed device or host memory."""
  device = jax.local_devices()[0]
  devices, processes = mesh.devices.size, jax.process_count()
  limit, host = device_bytes_limit(device), host_available_bytes()
  cpu = device.platform == "cpu"
  replicas = max(int(config.get("replicas", {}).get("count", 0)), 1)  # R train batches a step
  for key, copies in (("batch_size", (1 + max(int(config.data.prefetch), 0)) * replicas),
                      ("eval_batch_size", 1)):
    per_device, host_need = input_bytes(fields, config[key], devices, processes, copies, cpu)
    if limit is not None and per_device > limit:
      raise ConfigError(
          f"{key}={config[key]} needs ~{per_device / GIB:.1f} GiB per device for its inputs "
          f"alone ({copies} batch(es) in flight); this device ({device.device_kind}) has "
          f"{limit / GIB:.1f} GiB: use a smaller {key} or more devices")
    if host is not None and host_need > host:
      where = " (the gathered batch, and the CPU devices' copies)" if cpu else ""
      raise ConfigError(
          f"{key}={config[key]} needs ~{host_need / GIB:.1f} GiB of host memory for its inputs "
          f"alone{where}; this host has {host / GIB:.1f} GiB available: use a smaller {key}")
