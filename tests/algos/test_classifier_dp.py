"""DP-SGD as a config switch on the classifier: accounting, sharding, clipping paths."""

import json

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from experiments import classifier as classifier_config
from jaxml import runner
from jaxml.privacy import accounting
from tests.launch_utils import (assert_same_arrays, read_json, restore_arrays, run_launcher,
                                tensorboard_hparams)


def _config(**dp):
  config = classifier_config.get_config("smoke,dp")
  config.update(progress=False, num_steps=12, log_every=4, eval_every=6, checkpoint_every=6)
  config.linear_probe.enabled = False
  config.dp.update(dp)
  return config


def _assert_accountants_epsilon(rows, *, target, num_steps, n=1437, batch_size=64):
  """Each logged ε is dp_accounting's for σ calibrated to `target` (digits: n = 1437)."""
  sigma = accounting.calibrate_noise(target, batch_size / n, num_steps, n ** -1.1)
  for row in rows:
    assert row["dp/epsilon"] == pytest.approx(
        accounting.epsilon(sigma, batch_size / n, row["step"], n ** -1.1), rel=1e-6)
  assert rows[-1]["dp/epsilon"] == pytest.approx(target, rel=1e-3)


def test_logged_epsilon_is_the_accountants_and_reaches_the_target(tmp_path):
  runner.run(_config(target_epsilon=3.0), str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if "dp/epsilon" in l]
  assert [r["step"] for r in rows] == [4, 6, 8, 12]  # log steps and the checkpoint step
  _assert_accountants_epsilon(rows, target=3.0, num_steps=12)
  assert all(0 < r["train/batch_size"] < 128 for r in rows)  # Poisson sizes, not fixed


def _epsilon_from_record(record: dict) -> float:
  """The run's ε from its recorded parameters alone, straight from dp_accounting (written
  here from the schemes' definitions, not through jaxml.privacy.accounting)."""
  sigma, steps = record["dp/noise_multiplier"], record["dp/steps"]
  relation = dp_accounting.NeighboringRelation[record["dp/neighboring_relation"].upper()]
  if record["dp/sampling"] == "poisson":
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        record["dp/sampling_probability"], dp_accounting.GaussianDpEvent(sigma)), steps)
  else:  # without_replacement, under replace-one: the sum's sensitivity is 2C
    assert record["dp/sampling"] == "without_replacement", record
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
        record["dp/num_examples"], int(record["dp/expected_batch_size"]),
        dp_accounting.GaussianDpEvent(sigma / 2)), steps)
  accountant = {"rdp": rdp.RdpAccountant, "pld": pld.PLDAccountant}[record["dp/accountant"]]
  return accountant(neighboring_relation=relation).compose(event).get_epsilon(
      record["dp/delta"])


@pytest.mark.parametrize("dp", [dict(target_epsilon=3.0),
                                dict(sampling="without_replacement", noise_multiplier=1.5,
                                     target_epsilon=0.0, clipping="vmap")])
def test_workdir_alone_rederives_the_logged_epsilon(tmp_path, dp):
  config = _config(**dp)
  runner.run(config, str(tmp_path))
  record = read_json(tmp_path / "artifacts" / "summary.json")["record"]
  n, batch = 1437, config.batch_size
  assert record == {**record, "dp/sampling": config.dp.sampling, "dp/steps": 12,
                    "dp/num_examples": n, "dp/sampling_probability": batch / n,
                    "dp/expected_batch_size": batch, "dp/delta": n ** -1.1,
                    "dp/l2_clip": config.dp.l2_clip, "dp/clipping": config.dp.clipping,
                    "dp/accountant": "rdp"}
  if config.dp.sampling == "poisson":  # padded to a multiple of the 8 devices
    assert record["dp/padded_batch_size"] > batch and record["dp/padded_batch_size"] % 8 == 0
  else:
    assert record["dp/noise_multiplier"] == 1.5 and record["dp/padded_batch_size"] == batch
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if "dp/epsilon" in l]
  assert rows[-1]["step"] == 12 and rows[-1]["dp/epsilon"] == record["dp/epsilon"]
  assert _epsilon_from_record(record) == pytest.approx(record["dp/epsilon"], rel=1e-9)
  if dp.get("target_epsilon"):  # σ as calibrated, not as configured
    assert config.dp.noise_multiplier != record["dp/noise_multiplier"]
    assert record["dp/epsilon"] == pytest.approx(3.0, rel=1e-3)
  hparams = tensorboard_hparams(tmp_path)
  assert {k: hparams[k] for k in record} == record
  assert hparams["dp.enabled"] is True


def test_sharded_dp_run_equals_single_device(tmp_path):
  runner.run(_config(), str(tmp_path / "eight"))
  one = _config()
  one.num_devices = 1
  runner.run(one, str(tmp_path / "one"))
  assert_same_arrays(restore_arrays(tmp_path / "eight", 12), restore_arrays(tmp_path / "one", 12),
                     exact=False, rtol=1e-5, atol=1e-6)


def test_ghost_and_vmap_clipping_give_the_same_run(tmp_path):
  runner.run(_config(clipping="ghost"), str(tmp_path / "ghost"))
  runner.run(_config(clipping="vmap"), str(tmp_path / "vmap"))
  assert_same_arrays(restore_arrays(tmp_path / "ghost", 12), restore_arrays(tmp_path / "vmap", 12),
                     exact=False, rtol=1e-4, atol=1e-5)


def test_noise_free_large_clip_dp_step_equals_plain_sgd_on_the_same_batches(tmp_path):
  """σ→0 and C→∞: the DP step is the mean-gradient step on the sampled batch (sum / E[b])."""
  config = _config(target_epsilon=0.0, noise_multiplier=1e-12, l2_clip=1e4, sampling="shuffle")
  config.optimizer.update(name="sgd", momentum=0.0, weight_decay=0.0)
  config.augment.update(crop_pad=0, noise_std=0.0)
  runner.run(config, str(tmp_path / "dp"))
  plain = classifier_config.get_config("smoke")
  plain.update(progress=False, num_steps=12, log_every=4, eval_every=6, checkpoint_every=6)
  plain.linear_probe.enabled = False
  plain.optimizer.update(name="sgd", momentum=0.0, weight_decay=0.0)
  plain.augment.update(crop_pad=0, noise_std=0.0)
  runner.run(plain, str(tmp_path / "plain"))
  dp_params = restore_arrays(tmp_path / "dp", 12)
  plain_params = restore_arrays(tmp_path / "plain", 12)
  for key in dp_params:
    if key.startswith("['params']"):
      np.testing.assert_allclose(dp_params[key], plain_params[key], rtol=1e-4, atol=1e-4,
                                 err_msg=key)


@pytest.mark.slow
def test_private_resnet_groupnorm_trains_through_the_launcher_with_ghost_clipping_only(tmp_path):
  """`model=resnet,norm=group` under DP: every parameter ghost-clipped (allow_fallback=False
  would stop the run at the first trace otherwise), microbatched, the loss falls and the logged
  ε is the accountant's for the calibrated plan."""
  proc = run_launcher("experiments/classifier.py:smoke,dp,model=resnet", tmp_path,
                      "--config.model.norm=group", "--config.dp.allow_fallback=False",
                      "--config.dp.microbatch_size=16", "--config.num_steps=30",
                      "--config.log_every=10", "--config.linear_probe.enabled=False",
                      timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = json.load(open(tmp_path / "config.json"))
  assert config["model"]["name"] == "resnet" and config["model"]["norm"] == "group"
  assert config["dp"]["clipping"] == "ghost" and config["dp"]["allow_fallback"] is False
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if "train/loss" in l]
  assert [r["step"] for r in rows] == [10, 20, 30]
  assert rows[-1]["train/loss"] < rows[0]["train/loss"]
  _assert_accountants_epsilon(rows, target=8.0, num_steps=30)
