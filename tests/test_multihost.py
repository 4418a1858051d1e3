"""Multi-host for real: two processes x 4 CPU devices joined by jax.distributed (gloo).

Each process reads only its half of every global batch; the result must match one process
with 8 devices on the same seed (same global batches, same math up to reduction order).
"""

import subprocess

import pytest

from tests.launch_utils import (REPO, assert_same_arrays, free_port, launch_cmd, launcher_env,
                                restore_arrays, run_launcher)

RUN = ("--config.num_steps=20", "--config.log_every=5", "--config.eval_every=10",
       "--config.checkpoint_every=10", "--config.linear_probe.enabled=True")


# SupCon adds a cross-host all-gather of embeddings inside jax.shard_map.
# It takes the path of every algorithm (the launcher's jax.distributed start, per-host batch
# slices, chief-only writes, checkpoints across hosts) and adds to it; the classifier alone
# ran that path again for ~70 s of the suite's 20-minute budget, so it is no longer run.
@pytest.mark.parametrize("config", ["experiments/supcon.py:smoke"])
def test_two_processes_match_one_process_with_8_devices(config, tmp_path):
  single = run_launcher(config, tmp_path / "single", *RUN)
  assert single.returncode == 0, single.stderr[-3000:]

  coordinator = f"127.0.0.1:{free_port()}"
  workdir = tmp_path / "multi"
  procs = [subprocess.Popen(
      launch_cmd(config, workdir, *RUN, f"--coordinator_address={coordinator}",
                 "--num_processes=2", f"--process_id={i}"),
      cwd=REPO, env=launcher_env(devices=4), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "final " in outs[0][0] and "final " not in outs[1][0]  # only process 0 reports

  assert_same_arrays(restore_arrays(tmp_path / "single", 20), restore_arrays(workdir, 20),
                     exact=False, rtol=1e-5, atol=1e-6)
  single_rows = open(tmp_path / "single" / "metrics.jsonl").read().splitlines()
  multi_rows = open(workdir / "metrics.jsonl").read().splitlines()
  assert len(single_rows) == len(multi_rows)  # written once, by process 0 only
