"""Fine-tuning from another run: its model, this run's fresh optimizer state and step."""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.core import mesh as mesh_lib
from jaxml.core.checkpoint import Checkpointer, abstract_like
from jaxml.core.warm_start import warm_start
from jaxml.errors import ConfigError


@flax.struct.dataclass
class _State:
  params: dict
  model_state: dict
  opt: dict
  step: jax.Array


def _state(value, width=3):
  replicated = mesh_lib.replicated(mesh_lib.make_mesh())
  put = lambda x: jax.device_put(jnp.asarray(x), replicated)
  return _State(params={"w": put(np.full((2, width), value, np.float32))},
                model_state={"mean": put(np.full(width, value, np.float32))},
                opt={"mu": put(np.full((2, width), value, np.float32))}, step=put(np.int32(value)))


def _abstract(state):
  return abstract_like(state, jax.tree.map(lambda x: x.sharding, state))


def _source_run(workdir, state, step=7):
  checkpointer = Checkpointer(str(workdir), use_async=False)
  checkpointer.save(step, state)
  checkpointer.close()


def test_the_model_comes_from_the_source_and_the_rest_stays_fresh(tmp_path):
  _source_run(tmp_path, _state(5.0))
  fresh = _state(0.0)
  started = warm_start(fresh, _abstract(fresh), str(tmp_path))
  np.testing.assert_array_equal(started.params["w"], np.full((2, 3), 5.0))
  np.testing.assert_array_equal(started.model_state["mean"], np.full(3, 5.0))
  np.testing.assert_array_equal(started.opt["mu"], np.zeros((2, 3)))
  assert int(started.step) == 0


def test_a_source_of_another_model_or_without_checkpoints_is_refused(tmp_path):
  fresh = _state(0.0, width=4)
  with pytest.raises(ConfigError, match="no checkpoint under"):
    warm_start(fresh, _abstract(fresh), str(tmp_path))
  _source_run(tmp_path, _state(5.0, width=3))
  with pytest.raises(ConfigError, match=r"does not match this config's \(2 arrays differ"):
    warm_start(fresh, _abstract(fresh), str(tmp_path))
