"""Storage faults: a disk that fills mid-run, a workdir that turns read-only. One line naming
the path and the OS error (exit 3 from the launcher), no hang, the newest checkpoint intact,
and a rerun once there is space ends bit-identical to an uninterrupted run.

The injected faults run everywhere; the real full disk (a small tmpfs) needs mount rights, and
the real unwritable workdir needs root (the launcher runs as `nobody`, since root writes
anywhere).
"""

import asyncio
import errno
import gc
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from jaxml import runner
from jaxml.core import workdir as workdir_lib
from jaxml.core.checkpoint import CHECKSUMS
from jaxml.core.metrics import MetricWriter
from jaxml.errors import StorageError
from tests.launch_utils import (assert_same_arrays, checkpoint_steps, launch_cmd, launcher_env,
                                restore_arrays, run_launcher, start_launcher, wait_for_step)
from tests.test_signals import NUM_STEPS, RUN, final_metrics, run_config, wait_for_path

# The uninterrupted run these tests compare against is the signal tests' (`signals_reference`
# in tests/conftest.py): the same xdist group puts both modules on one worker, so it is
# trained once.
pytestmark = pytest.mark.xdist_group("signals")


@pytest.fixture(scope="module")
def reference(signals_reference):
  return signals_reference



CONFIG = "experiments/classifier.py:smoke"


def test_storage_error_maps_storage_errnos_only():
  workdir = "/runs/a"
  full = runner.storage_error(OSError(errno.ENOSPC, "No space left on device"), workdir)
  assert str(full).startswith("/runs/a: No space left on device; ")
  gone = runner.storage_error(
      FileNotFoundError(errno.ENOENT, "No such file or directory", "/runs/a/metrics.jsonl"),
      workdir)
  assert str(gone).startswith("/runs/a/metrics.jsonl: No such file or directory; ")
  # A missing file elsewhere (a data set, a config) is not a storage fault of the workdir.
  assert runner.storage_error(
      FileNotFoundError(errno.ENOENT, "No such file", "/runs/ab/x"), workdir) is None
  assert runner.storage_error(OSError(errno.EINVAL, "Invalid argument"), workdir) is None


def test_disk_full_mid_run_is_one_error_and_the_rerun_resumes_exactly(reference, tmp_path,
                                                                      monkeypatch):
  write = MetricWriter.write

  def write_until_full(self, step, metrics):
    if step > 150:
      raise OSError(errno.ENOSPC, "No space left on device")
    write(self, step, metrics)

  monkeypatch.setattr(MetricWriter, "write", write_until_full)
  os.makedirs(tmp_path / "artifacts")
  with open(tmp_path / "artifacts" / "summary.json", "w") as f:  # of an earlier, shorter run
    json.dump({"completed": True, "step": 50}, f)
  with pytest.raises(StorageError) as fault:
    runner.run(run_config(), str(tmp_path))
  assert str(fault.value).startswith(f"{tmp_path}: No space left on device; ")
  assert "\n" not in str(fault.value)
  assert checkpoint_steps(tmp_path)[-1] == 100  # the save under way at the fault completed
  restore_arrays(tmp_path, 100)
  assert not os.path.exists(tmp_path / "artifacts" / "summary.json")  # no finished run here
  monkeypatch.undo()
  runner.run(run_config(), str(tmp_path))
  arrays, metrics = reference
  assert_same_arrays(arrays, restore_arrays(tmp_path, NUM_STEPS))
  assert final_metrics(tmp_path) == metrics


def test_read_only_at_the_end_is_one_error_and_the_rerun_writes_the_artifacts(
    reference, tmp_path, monkeypatch):
  def read_only(workdir, summary, metrics_path):
    del summary, metrics_path
    raise OSError(errno.EROFS, "Read-only file system",
                  os.path.join(workdir, "artifacts", "summary.json"))

  monkeypatch.setattr(workdir_lib, "write_artifacts", read_only)
  with pytest.raises(StorageError) as fault:
    runner.run(run_config(), str(tmp_path))
  assert str(fault.value).startswith(
      f"{tmp_path}/artifacts/summary.json: Read-only file system; ")
  assert checkpoint_steps(tmp_path)[-1] == NUM_STEPS
  monkeypatch.undo()
  summary = runner.run(run_config(), str(tmp_path))  # no step to train: the final phase only
  assert summary["completed"] and "perf/steps_per_second" not in summary
  arrays, metrics = reference
  assert_same_arrays(arrays, restore_arrays(tmp_path, NUM_STEPS))
  assert final_metrics(tmp_path) == metrics


@pytest.fixture
def small_disk(tmp_path):
  """A 16 MiB tmpfs (the test shrinks it mid-run), unmounted after."""
  mount = tmp_path / "small"
  mount.mkdir()
  made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                        capture_output=True, text=True, check=False)
  if made.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
  try:
    yield mount
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


def shrink_to_what_is_used(mount, spare_kib: int = 48) -> None:
  """Remounts the tmpfs with `spare_kib` KiB free: less than one checkpoint of the smoke model
  (~100 KiB), so the run's next save fills it. (A save in flight may grow past the new size
  between reading and remounting; that remount fails and is tried again.)"""
  for _ in range(100):
    stat = os.statvfs(mount)
    used_kib = (stat.f_blocks - stat.f_bfree) * stat.f_frsize // 1024
    if subprocess.run(["mount", "-o", f"remount,size={used_kib + spare_kib}k", str(mount)],
                      capture_output=True, check=False).returncode == 0:
      return
  raise AssertionError(f"could not shrink {mount}")


def test_real_disk_full_exits_3_in_one_line_and_the_rerun_with_space_resumes(
    reference, small_disk):
  # The disk fills after the first checkpoint: a fixed small size is fragile, as how many
  # checkpoints fit in it depends on how Orbax and tensorstore write on the machine.
  workdir = small_disk / "run"
  proc = start_launcher(CONFIG, workdir, *RUN)
  try:
    wait_for_path(proc, workdir / "checkpoints" / "100")
    shrink_to_what_is_used(small_disk)
    stdout, stderr = proc.communicate(timeout=300)
  finally:
    proc.kill()
  assert proc.returncode == 3, stderr[-3000:]
  assert stdout == ""
  lines = stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
  assert str(workdir) in lines[0] and "No space left on device" in lines[0], lines[0]
  saved = checkpoint_steps(workdir)
  assert saved and 100 <= saved[-1] < NUM_STEPS
  restore_arrays(workdir, saved[-1])  # the newest checkpoint is whole
  assert not [d for d in os.listdir(workdir / "checkpoints") if not d.isdigit()]
  subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
  again = run_launcher(CONFIG, workdir, *RUN)
  assert again.returncode == 0, again.stderr[-3000:]
  arrays, metrics = reference
  assert_same_arrays(arrays, restore_arrays(workdir, NUM_STEPS))
  assert final_metrics(workdir) == metrics
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]  # every line whole again
  assert rows[-1]["step"] == NUM_STEPS


def _unretrieved_task_failure(err: Exception) -> None:
  """A task that raised `err` and is garbage-collected without anyone reading its exception:
  asyncio then logs "Task exception was never retrieved" (as orbax's failed writes do)."""
  async def write():
    raise err
  loop = asyncio.new_event_loop()
  try:
    task = loop.create_task(write())
    loop.run_until_complete(asyncio.sleep(0))
    del task
    gc.collect()
  finally:
    loop.close()


def test_the_launcher_silences_asyncio_only_for_a_storage_fault(caplog):
  from launch.main import _not_a_storage_fault  # pylint: disable=import-outside-toplevel
  logger = logging.getLogger("asyncio")
  logger.addFilter(_not_a_storage_fault)
  try:
    with caplog.at_level(logging.ERROR, logger="asyncio"):
      _unretrieved_task_failure(ValueError(
          "RESOURCE_EXHAUSTED: Failed to write 775 bytes to file 9: No space left on device "
          "[os_error_code='28']"))
      assert not caplog.records  # the launcher reports this fault itself, in one line
      _unretrieved_task_failure(ValueError("a bug in a background write"))
      (record,) = caplog.records  # anything else is still logged
      assert "never retrieved" in record.getMessage()
  finally:
    logger.removeFilter(_not_a_storage_fault)


AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


@pytest.fixture
def nobody_home():
  """A directory of user `nobody`, outside pytest's tmp root (which only root may enter)."""
  if os.geteuid() != 0 or not shutil.which("setpriv"):
    pytest.skip("needs root, to run the launcher as another user whose workdir turns unwritable")
  as_nobody = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import absl, jax, orbax"],
                             capture_output=True, text=True, check=False)
  if as_nobody.returncode != 0:  # e.g. a virtualenv inside a directory only root may enter
    pytest.skip("user nobody cannot import this Python environment: "
                f"{(as_nobody.stderr.strip().splitlines() or ['?'])[-1]}")
  home = pathlib.Path(tempfile.mkdtemp(prefix="jaxml-nobody-"))
  home.chmod(0o755)
  os.chown(home, 65534, 65534)
  yield home
  shutil.rmtree(home, ignore_errors=True)


def test_workdir_turning_unwritable_exits_3_in_one_line_and_the_rerun_resumes(
    reference, nobody_home):
  home = nobody_home
  workdir = home / "run"
  env = {**launcher_env(), "HOME": str(home), "MPLCONFIGDIR": str(home),
         "JAX_COMPILATION_CACHE_DIR": str(home / "xla-cache")}
  proc = subprocess.Popen(
      [*AS_NOBODY, *launch_cmd(CONFIG, workdir, *RUN)],
      cwd=os.path.dirname(os.path.dirname(__file__)), env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  wait_for_step(proc, workdir, 150)
  # Step 100 sealed: its write runs beside the steps, so step 150 may come first on a busy CPU.
  wait_for_path(proc, workdir / "checkpoints" / "100" / CHECKSUMS)
  for root, dirs, names in os.walk(workdir):
    for name in [*dirs, *names, "."]:
      os.chmod(os.path.join(root, name), 0o555)  # what was open for writing stays writable
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 3, err[-3000:]
  assert out == "" and len(err.splitlines()) == 1, err[-3000:]
  assert err.startswith("error: ") and str(workdir) in err and "Permission denied" in err
  saved = checkpoint_steps(workdir)
  restore_arrays(workdir, saved[-1])  # the newest checkpoint is whole
  again = run_launcher(CONFIG, workdir, *RUN)  # as root: writable again
  assert again.returncode == 0, again.stderr[-3000:]
  arrays, metrics = reference
  assert_same_arrays(arrays, restore_arrays(workdir, NUM_STEPS))
  assert final_metrics(workdir) == metrics
