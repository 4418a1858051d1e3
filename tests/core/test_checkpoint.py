"""The Checkpointer on its own: newest readable step, quarantine of unreadable ones alone
(empty, partial, bit-flipped), checksums, a changed state shape refused, keep N."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.core import mesh as mesh_lib
from jaxml.core.checkpoint import CHECKSUMS, Checkpointer, abstract_like, checksums
from jaxml.errors import ConfigError
from tests.launch_utils import flip_one_bit


@pytest.fixture(scope="module")
def mesh():
  return mesh_lib.make_mesh()


def _state(mesh, step):
  """A small train-state-like tree: rows sharded on `data`, a replicated scalar."""
  w = jax.device_put(np.full((8, 3), float(step), np.float32), mesh_lib.data_sharding(mesh))
  return {"w": w, "step": jax.device_put(jnp.int32(step), mesh_lib.replicated(mesh))}


def _abstract(mesh, cols=3, extra=False):
  """The state restored into: as saved, or with wider `w`, or with one more array."""
  state = _state(mesh, 0)
  state["w"] = jax.device_put(np.zeros((8, cols), np.float32), mesh_lib.data_sharding(mesh))
  if extra:
    state["extra"] = jax.device_put(np.zeros(2, np.float32), mesh_lib.replicated(mesh))
  return abstract_like(state, jax.tree.map(lambda x: x.sharding, state))


def _save_steps(workdir, mesh, steps, max_to_keep=3):
  checkpointer = Checkpointer(str(workdir), max_to_keep=max_to_keep, use_async=False)
  for step in steps:
    checkpointer.save(step, _state(mesh, step))
  checkpointer.wait()
  checkpointer.close()


def _on_disk(workdir, folder="checkpoints"):
  path = os.path.join(workdir, folder)
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _restore(workdir, mesh, **abstract):
  checkpointer = Checkpointer(str(workdir))
  try:
    return checkpointer.restore_latest(_abstract(mesh, **abstract)), checkpointer.all_steps()
  finally:
    checkpointer.close()


def _corrupt(workdir, step, how):
  root = os.path.join(workdir, "checkpoints", str(step))
  files = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]
  assert files
  for path in files:
    if how == "garbage":
      with open(path, "wb") as f:
        f.write(b"\x00garbage")
    else:  # a copy that stopped half way: every file cut to half its length
      size = os.path.getsize(path)
      with open(path, "r+b") as f:
        f.truncate(size // 2)


def test_restores_the_newest_step_with_its_values_and_shardings(tmp_path, mesh):
  _save_steps(tmp_path, mesh, [1, 2, 3])
  state, steps = _restore(tmp_path, mesh)
  assert steps == [1, 2, 3]
  np.testing.assert_array_equal(state["w"], np.full((8, 3), 3.0))
  assert int(state["step"]) == 3
  assert state["w"].sharding == mesh_lib.data_sharding(mesh)


def test_empty_workdir_restores_nothing(tmp_path, mesh):
  assert _restore(tmp_path, mesh) == (None, [])


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_unreadable_newest_is_quarantined_and_the_previous_restored(tmp_path, mesh, how,
                                                                    caplog):
  _save_steps(tmp_path, mesh, [1, 2, 3])
  _corrupt(tmp_path, 3, how)
  state, steps = _restore(tmp_path, mesh)
  assert int(state["step"]) == 2
  np.testing.assert_array_equal(state["w"], np.full((8, 3), 2.0))
  assert steps == [1, 2] and _on_disk(tmp_path) == [1, 2]
  assert _on_disk(tmp_path, "checkpoints_corrupt") == [3]
  assert "checkpoint at step 3 is unreadable" in caplog.text
  # The quarantined step can be saved again, and is then the newest readable one.
  _save_steps(tmp_path, mesh, [3])
  state, steps = _restore(tmp_path, mesh)
  assert int(state["step"]) == 3 and steps == [1, 2, 3]
  # Unreadable again: the new copy replaces the old one in quarantine.
  _corrupt(tmp_path, 3, how)
  state, steps = _restore(tmp_path, mesh)
  assert int(state["step"]) == 2 and _on_disk(tmp_path, "checkpoints_corrupt") == [3]


def test_every_step_unreadable_restores_nothing_and_moves_them_all(tmp_path, mesh):
  _save_steps(tmp_path, mesh, [4, 8])
  _corrupt(tmp_path, 4, "garbage")
  _corrupt(tmp_path, 8, "garbage")
  assert _restore(tmp_path, mesh) == (None, [])
  assert _on_disk(tmp_path) == [] and _on_disk(tmp_path, "checkpoints_corrupt") == [4, 8]


def test_keeps_the_newest_n_and_ignores_a_repeated_step(tmp_path, mesh):
  _save_steps(tmp_path, mesh, [1, 2, 3, 4, 5], max_to_keep=2)
  assert _on_disk(tmp_path) == [4, 5]
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2, use_async=False)
  checkpointer.save(5, _state(mesh, 99))  # already saved: a no-op, not an overwrite
  checkpointer.wait()
  checkpointer.close()
  state, steps = _restore(tmp_path, mesh)
  assert steps == [4, 5] and int(state["step"]) == 5
  np.testing.assert_array_equal(state["w"], np.full((8, 3), 5.0))


def _step_dir(workdir, step):
  return os.path.join(workdir, "checkpoints", str(step))


def _damage(workdir, how):
  """Damages step 3 (or adds a broken step 4) of a workdir holding steps 1-3."""
  step3 = _step_dir(workdir, 3)
  if how == "empty newer step":
    os.mkdir(_step_dir(workdir, 4))
  elif how == "newer step without its item":
    shutil.copytree(step3, _step_dir(workdir, 4))
    shutil.rmtree(os.path.join(_step_dir(workdir, 4), "default"))
  elif how == "newer step that is a file":
    open(_step_dir(workdir, 4), "w").close()
  elif how == "commit marker missing":
    os.remove(os.path.join(step3, "commit_success.txt"))
  elif how == "metadata missing":
    os.remove(os.path.join(step3, "default", "_METADATA"))
  elif how == "one bit flipped":
    flip_one_bit(_step_dir(workdir, 3), 0x04)
  return 4 if "newer" in how else 3


@pytest.mark.parametrize("how, reason", [
    ("empty newer step", "(empty directory)"),
    ("newer step without its item", "(no default/ item in it)"),
    ("newer step that is a file", "(not a directory)"),
    ("commit marker missing", "(commit_success.txt is missing)"),
    ("metadata missing", "(default/_METADATA is missing)"),
    ("one bit flipped", "differs from its checksum)")])
def test_only_the_broken_step_is_set_aside_and_saves_go_on(tmp_path, mesh, how, reason,
                                                            caplog):
  _save_steps(tmp_path, mesh, [1, 2, 3])
  broken = _damage(tmp_path, how)
  state, steps = _restore(tmp_path, mesh)
  good = 2 if broken == 3 else 3
  assert int(state["step"]) == good
  np.testing.assert_array_equal(state["w"], np.full((8, 3), float(good)))
  assert steps == list(range(1, good + 1)) and _on_disk(tmp_path) == steps
  assert _on_disk(tmp_path, "checkpoints_corrupt") == [broken]
  assert f"checkpoint at step {broken} is unreadable (" in caplog.text and reason in caplog.text
  # Saving goes on from there: the set-aside step is written again, and is then the newest.
  _save_steps(tmp_path, mesh, [good + 1, good + 2])
  state, steps = _restore(tmp_path, mesh)
  assert steps == [good, good + 1, good + 2] and int(state["step"]) == good + 2


def test_a_step_that_restores_is_never_moved(tmp_path, mesh, caplog):
  """Without a manifest (an older jaxml's step), a step lacking Orbax's commit marker and
  metadata files still restores, so it stays, and is sealed with checksums then."""
  _save_steps(tmp_path, mesh, [1, 2])
  for name in (CHECKSUMS, "commit_success.txt", "_CHECKPOINT_METADATA", "default/_METADATA"):
    os.remove(os.path.join(_step_dir(tmp_path, 2), name))
  state, steps = _restore(tmp_path, mesh)
  assert int(state["step"]) == 2 and steps == [1, 2]
  assert not os.path.exists(tmp_path / "checkpoints_corrupt")
  assert "unreadable" not in caplog.text
  manifest = json.load(open(os.path.join(_step_dir(tmp_path, 2), CHECKSUMS)))
  assert manifest["sha256"] == checksums(_step_dir(tmp_path, 2))


def test_every_committed_step_is_sealed_with_the_checksums_of_its_files(tmp_path, mesh):
  checkpointer = Checkpointer(str(tmp_path), use_async=True)
  checkpointer.save(1, _state(mesh, 1))
  checkpointer.save(2, _state(mesh, 2))  # finishes and seals step 1 first
  assert os.path.exists(os.path.join(_step_dir(tmp_path, 1), CHECKSUMS))
  checkpointer.close()  # finishes and seals step 2
  for step in (1, 2):
    sums = json.load(open(os.path.join(_step_dir(tmp_path, step), CHECKSUMS)))["sha256"]
    on_disk = {os.path.relpath(os.path.join(d, f), _step_dir(tmp_path, step))
               for d, _, names in os.walk(_step_dir(tmp_path, step)) for f in names}
    assert set(sums) == on_disk - {CHECKSUMS} and "default/_METADATA" in sums


def test_a_damaged_manifest_is_not_damage_to_the_step(tmp_path, mesh, caplog):
  _save_steps(tmp_path, mesh, [1, 2])
  manifest = os.path.join(_step_dir(tmp_path, 2), CHECKSUMS)
  with open(manifest, "w") as f:
    f.write('{"sha256": {"default/_METADATA": "0"}, "self": "1"}')
  state, steps = _restore(tmp_path, mesh)
  assert int(state["step"]) == 2 and steps == [1, 2]
  assert f"{CHECKSUMS} is damaged" in caplog.text
  assert json.load(open(manifest))["sha256"] == checksums(_step_dir(tmp_path, 2))  # resealed


def test_leftover_temp_directories_are_never_steps_and_the_writer_removes_them(tmp_path,
                                                                               mesh):
  _save_steps(tmp_path, mesh, [1])
  leftovers = ["2.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1796283100"]
  for name in leftovers:
    shutil.copytree(_step_dir(tmp_path, 1), tmp_path / "checkpoints" / name)
  state, steps = _restore(tmp_path, mesh)
  assert int(state["step"]) == 1 and steps == [1]
  # A reader (e.g. jaxml.trained.load on a live run) leaves them: they may be a save in flight.
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", *leftovers]
  _save_steps(tmp_path, mesh, [2])
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


@pytest.mark.parametrize("change, saved, here", [
    ({"cols": 4}, "w: ((8, 3), 'float32') saved", "((8, 4), 'float32') here"),
    ({"extra": True}, "extra: missing saved", "((2,), 'float32') here")])
def test_a_state_of_another_shape_is_refused_and_nothing_moved(tmp_path, mesh, change, saved,
                                                                 here):
  _save_steps(tmp_path, mesh, [1, 2])
  with pytest.raises(ConfigError) as err:
    _restore(tmp_path, mesh, **change)
  message = str(err.value)
  assert "\n" not in message and "1 arrays differ, e.g. " in message
  assert saved in message and here in message and "--config.init_from=" in message
  assert _on_disk(tmp_path) == [1, 2] and not os.path.exists(tmp_path / "checkpoints_corrupt")


def test_keeping_no_checkpoint_is_refused_before_anything_is_written(tmp_path):
  with pytest.raises(ConfigError, match="keep_checkpoints=0 must be at least 1"):
    Checkpointer(str(tmp_path), max_to_keep=0)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_without_room_for_a_copy_the_save_is_orbaxs_own_and_still_complete(tmp_path, mesh,
                                                                          monkeypatch):
  from jaxml.core import background  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(background, "fits_a_copy", lambda state: False)
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=3, use_async=True)
  for step in (1, 2):
    checkpointer.save(step, _state(mesh, step))
    assert not checkpointer._writer.pending  # pylint: disable=protected-access
  checkpointer.close()
  state, steps = _restore(tmp_path, mesh)
  assert steps == [1, 2]
  np.testing.assert_array_equal(state["w"], np.full((8, 3), 2.0))
  assert all(os.path.exists(tmp_path / "checkpoints" / str(s) / CHECKSUMS) for s in steps)
