"""A workdir that cannot lose work, through the real launcher: a second launcher refused while
the first runs, a killed holder's lock taken over, another config refused with the workdir left
byte for byte as it was, and a damaged metrics.jsonl resumed through."""

import json
import os
import signal
import socket
import subprocess

from jaxml.core import lock
from tests.launch_utils import (REPO, checkpoint_steps, free_port, launch_cmd, launcher_env,
                                run_launcher, start_launcher, wait_for_step)

CONFIG = "experiments/classifier.py:smoke"
# Far longer than the test waits, so the first launcher is still running when the second
# comes; the resumed run ends early instead (num_steps may change on resume).
LONG = ("--config.num_steps=100000", "--config.log_every=10", "--config.checkpoint_every=100",
        "--config.eval_every=100000", "--config.linear_probe.enabled=False")
SHORT = ("--config.num_steps=20", "--config.log_every=10", "--config.checkpoint_every=10",
         "--config.eval_every=20", "--config.linear_probe.enabled=False")


def _error_line(proc) -> str:
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  return lines[0]


def _train_steps(workdir) -> list[int]:
  return [json.loads(l)["step"] for l in open(workdir / "metrics.jsonl", encoding="utf-8")
          if "train/loss" in l]


def _snapshot(workdir) -> dict[str, bytes]:
  """Every file of the workdir's record of the run, by relative path."""
  found = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      found[os.path.relpath(path, workdir)] = open(path, "rb").read()
  return found


def test_a_second_launcher_is_refused_and_a_killed_holders_lock_taken_over(tmp_path):
  first = start_launcher(CONFIG, tmp_path, *LONG)
  try:
    wait_for_step(first, tmp_path, 20)
    second = run_launcher(CONFIG, tmp_path, *LONG)
    line = _error_line(second)
    assert (f"workdir {tmp_path} is in use by pid {first.pid} on host {socket.gethostname()} "
            "since ") in line, line
    assert first.poll() is None  # the refused launcher left the running one alone
    wait_for_step(first, tmp_path, 120)  # past a checkpoint to resume from
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  assert json.loads((tmp_path / ".jaxml-lock").read_text())["pid"] == first.pid  # stale now

  end = (checkpoint_steps(tmp_path) or [0])[-1] + 50
  resumed = run_launcher(CONFIG, tmp_path, *LONG, f"--config.num_steps={end}",
                         f"--config.eval_every={end}")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"taking over the lock of pid {first.pid}" in resumed.stderr
  assert not (tmp_path / ".jaxml-lock").exists()  # released at the end
  assert _train_steps(tmp_path) == list(range(10, end + 1, 10))  # every row, once, in order
  assert checkpoint_steps(tmp_path)[-1] == end


def test_another_config_is_refused_untouched_and_a_longer_run_resumes_a_damaged_log(tmp_path):
  done = run_launcher(CONFIG, tmp_path, *SHORT)
  assert done.returncode == 0, done.stderr[-3000:]
  before = _snapshot(tmp_path)

  changed = run_launcher(CONFIG, tmp_path, *SHORT, "--config.model.dense=64",
                         "--config.optimizer.learning_rate=0.02", "--config.seed=1")
  line = _error_line(changed)
  assert ("holds a run of another config (model.dense 32→64, optimizer.learning_rate "
          "0.01→0.02, seed 0→1); ") in line, line
  assert f"--config.init_from={tmp_path}" in line
  assert _snapshot(tmp_path) == before  # checkpoints, metrics, config: not a byte changed

  # What a disk that filled and a kill leave: garbage, a bad byte, a torn last row.
  metrics = tmp_path / "metrics.jsonl"
  good = metrics.read_bytes()
  lines = good.splitlines(keepends=True)
  metrics.write_bytes(lines[0] + b"\x00\x00garbage\n" + b'{"step": 15, "x": "\xff"}\n'
                      + b"".join(lines[1:]) + b'{"step": 21, "train/lo')
  longer = run_launcher(CONFIG, tmp_path, *SHORT, "--config.num_steps=40")
  assert longer.returncode == 0, longer.stderr[-3000:]
  assert "skipped damaged line(s) 2 (not JSON), 3 (not UTF-8);" in longer.stderr
  assert longer.stderr.count("damaged line") == 1  # one warning, then the file is clean
  assert metrics.read_bytes().startswith(good)  # the rows kept as they were, then extended
  assert _train_steps(tmp_path) == [10, 20, 30, 40] and checkpoint_steps(tmp_path)[-1] == 40
  assert (tmp_path / "metrics.jsonl.damaged").read_bytes().count(b"\n") == 2
  assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == 40


def test_a_multi_host_run_on_a_held_workdir_stops_on_every_process(tmp_path):
  """Process 0 alone takes the lock; process 1 must not go on (and hang) when it is refused."""
  coordinator = f"127.0.0.1:{free_port()}"
  release = lock.acquire(str(tmp_path))  # held by this test's process
  try:
    procs = [subprocess.Popen(
        launch_cmd(CONFIG, tmp_path, *SHORT, f"--coordinator_address={coordinator}",
                   "--num_processes=2", f"--process_id={i}"),
        cwd=REPO, env=launcher_env(devices=4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
  finally:
    release()
  for proc, (_, err) in zip(procs, outs):
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
  assert f"is in use by pid {os.getpid()} on host" in outs[0][1].strip().splitlines()[-1]
  assert "process 0 of this run was refused its lock" in outs[1][1].strip().splitlines()[-1]
  assert not (tmp_path / "checkpoints").exists()
