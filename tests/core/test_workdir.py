"""config.json as a run's identity: another config refused in one line, resumable keys allowed."""

import ml_collections
import pytest

from jaxml.core import workdir
from jaxml.errors import ConfigError


def _config(**overrides):
  config = ml_collections.ConfigDict({
      "algo": "classifier", "seed": 0, "num_steps": 60, "log_every": 10, "progress": True,
      "data": {"source": "digits", "prefetch": 2, "classes": (0, 1)},
      "optimizer": {"name": "adamw", "learning_rate": 1e-2},
      "linear_probe": {"enabled": False, "l2": 1e-4}, "model": {"width": 4}})
  config.update(overrides)
  return config


def test_a_new_workdir_or_the_same_config_passes(tmp_path):
  workdir.check_same_config(str(tmp_path), _config())  # nothing recorded yet
  workdir.write_config(str(tmp_path), _config())
  workdir.check_same_config(str(tmp_path), _config())  # tuples read back as lists still match


def test_resumable_keys_may_change(tmp_path):
  workdir.write_config(str(tmp_path), _config())
  workdir.check_same_config(str(tmp_path), _config(
      num_steps=200, log_every=5, progress=False, data={"prefetch": 0},
      linear_probe={"enabled": True, "l2": 1.0}))


@pytest.mark.parametrize("dp,allowed", [
    ({"enabled": True, "target_epsilon": 0.0, "noise_multiplier": 1.1}, True),  # σ given
    ({"enabled": False, "target_epsilon": 8.0, "noise_multiplier": 0.0}, True),  # not private
    ({"enabled": True, "target_epsilon": 8.0, "noise_multiplier": 0.0}, False)])  # calibrated
def test_num_steps_is_pinned_where_dp_calibrated_its_noise_to_it(tmp_path, dp, allowed):
  workdir.write_config(str(tmp_path), _config(dp=dp))
  workdir.check_same_config(str(tmp_path), _config(dp=dp, log_every=5))  # other keys still may
  longer = _config(dp=dp, num_steps=200)
  if allowed:
    workdir.check_same_config(str(tmp_path), longer)
    return
  with pytest.raises(ConfigError) as refused:
    workdir.check_same_config(str(tmp_path), longer)
  assert str(refused.value) == (
      f"workdir {tmp_path} holds a run with dp.enabled=True and dp.target_epsilon=8.0, which "
      "ties num_steps to 60: changing it (60→200) on resume would recalibrate the noise of the "
      "steps to come and misstate the privacy spent; resume with num_steps=60, or start a new "
      "--workdir")


def test_another_config_is_refused_naming_the_keys(tmp_path):
  workdir.write_config(str(tmp_path), _config())
  changed = _config(seed=1, num_steps=100, model={"width": 8})
  with pytest.raises(ConfigError) as refused:
    workdir.check_same_config(str(tmp_path), changed)
  message = str(refused.value)
  assert "\n" not in message
  assert (f"workdir {tmp_path} holds a run of another config (model.width 4→8, seed 0→1); "
          in message)
  assert f"--config.init_from={tmp_path}" in message and "num_steps" not in message.split(";")[0]


def test_many_changes_are_counted_and_added_or_removed_keys_named(tmp_path):
  workdir.write_config(str(tmp_path), _config())
  changed = _config(seed=1, model={"width": 8, "depth": 2},
                    optimizer={"name": "sgd", "learning_rate": 0.5},
                    data={"classes": (0, 1, 2)})
  with pytest.raises(ConfigError, match=r'\(data.classes \[0, 1\]→\[0, 1, 2\], model.depth '
                     r'\(absent\)→2, model.width 4→8 and 3 more\)'):
    workdir.check_same_config(str(tmp_path), changed)


def test_config_changes_and_resumable():
  assert workdir.config_changes({"a": {"b": 1, "c": [1]}}, {"a": {"b": 1, "c": [1]}}) == []
  assert workdir.config_changes({"a": {"b": 1}}, {"a": {"b": 2}, "d": 3}) == [
      ("a.b", 1, 2), ("d", workdir._ABSENT, 3)]
  assert workdir.resumable("linear_probe.l2") and workdir.resumable("data.prefetch")
  assert not workdir.resumable("data.source") and not workdir.resumable("num_steps_extra")


def test_a_config_json_edited_into_garbage_is_one_line(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ConfigError, match="config.json is not JSON .*delete it to resume"):
    workdir.check_same_config(str(tmp_path), _config())


def test_a_key_added_since_the_run_began_is_no_change_when_off(tmp_path):
  old = _config()
  del old.data["classes"]  # a config.json written before `data.classes` existed
  workdir.write_config(str(tmp_path), old)
  workdir.check_same_config(str(tmp_path), _config(data={"classes": ()}))  # () = every class
  with pytest.raises(ConfigError, match=r"data\.classes \(absent\)→\[3, 5\]"):
    workdir.check_same_config(str(tmp_path), _config(data={"classes": (3, 5)}))


def test_a_block_added_since_the_run_began_is_no_change_when_all_of_it_is_off(tmp_path):
  workdir.write_config(str(tmp_path), _config())  # written before the `replicas` block existed
  off = {"count": 0, "vary": "", "window": 0}
  workdir.check_same_config(str(tmp_path), _config(replicas=off))
  with pytest.raises(ConfigError, match=r"replicas \(absent\)→"):
    workdir.check_same_config(str(tmp_path), _config(replicas={**off, "count": 3}))


def test_few_shot_probes_may_be_added_or_changed_on_resume(tmp_path):
  """Few-shot probes only evaluate frozen features: a run from before the block existed, or
  one resumed with other probe tasks, trains the same parameters."""
  workdir.write_config(str(tmp_path), _config())  # written before the `few_shot` block existed
  probes = {"tasks": "held_out=digits@5-9", "shots": (1, 5), "draws": 5, "l2": 1e-2,
            "whiten": False, "every": 0, "seed": 0}
  workdir.check_same_config(str(tmp_path), _config(few_shot=probes))
  workdir.write_config(str(tmp_path), _config(few_shot=probes))
  workdir.check_same_config(str(tmp_path), _config(few_shot={**probes, "tasks": ""}))
