"""The Checkpointer on its own: newest readable step, quarantine of unreadable ones, keep N."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.core import mesh as mesh_lib
from jaxml.core.checkpoint import Checkpointer, abstract_like


@pytest.fixture(scope="module")
def mesh():
  return mesh_lib.make_mesh()


def _state(mesh, step):
  """A small train-state-like tree: rows sharded on `data`, a replicated scalar."""
  w = jax.device_put(np.full((8, 3), float(step), np.float32), mesh_lib.data_sharding(mesh))
  return {"w": w, "step": jax.device_put(jnp.int32(step), mesh_lib.replicated(mesh))}


def _abstract(mesh):
  state = _state(mesh, 0)
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


def _restore(workdir, mesh):
  checkpointer = Checkpointer(str(workdir))
  try:
    return checkpointer.restore_latest(_abstract(mesh)), checkpointer.all_steps()
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
