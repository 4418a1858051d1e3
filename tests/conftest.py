"""Every test runs on 8 simulated CPU devices; this must run before jax is imported.

The XLA compilation cache is shared by the tests and the launcher subprocesses they start,
so the same programs are not compiled again and again (it cuts a launcher run ~20 s -> ~8 s).
"""

import os
import tempfile

import pytest

# The 8 devices' threads meet at every collective; XLA aborts the process when one is 40 s late
# (its CPU default), which two test workers and their launchers on 2 cores can make happen.
# The launcher subprocesses inherit these flags.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_cpu_collective_call_terminate_timeout_seconds=900"
    " --xla_cpu_collective_call_warn_stuck_timeout_seconds=600"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "jaxml-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


@pytest.fixture(scope="session")
def signals_reference(tmp_path_factory):
  """The uninterrupted run that tests/test_signals.py and tests/test_storage_faults.py compare
  interrupted runs against (both are xdist group "signals", so one worker trains it once)."""
  from tests import test_signals  # pylint: disable=import-outside-toplevel
  return test_signals.train_reference(tmp_path_factory.mktemp("uninterrupted"))
