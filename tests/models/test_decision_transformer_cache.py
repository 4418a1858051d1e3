"""Cached play equals the full model: return logits at the last patch, action logits at R_s."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxml.models import decision_transformer as dt
from jaxml.models import decision_transformer_cache as dtc

STEPS, BATCH = 3, 4


def _model(**kw):
  args = dict(image_shape=(4, 4, 2), patch_size=2, num_actions=5, num_return_bins=8,
              context=STEPS, width=16, depth=2, num_heads=2)
  args.update(kw)
  return dt.DecisionTransformer(**args, rngs=nnx.Rngs(0))


def _windows(seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(BATCH, STEPS, 4, 4, 2)), jnp.float32),
          jnp.asarray(rng.integers(0, 8, (BATCH, STEPS))),
          jnp.asarray(rng.integers(0, 5, (BATCH, STEPS))),
          jnp.asarray(rng.integers(0, 4, (BATCH, STEPS))))


@pytest.mark.parametrize("kw", [{}, {"depth": 1}, {"single_return_token": True}])
def test_prefill_and_extend_equal_the_full_model_at_every_slot(kw):
  model = _model(**kw)
  frames, returns, actions, rewards = _windows()
  slot = jnp.array([0, 1, 2, 2])  # each example plays a different step of its window
  chosen = jnp.array([3, 0, 7, 5])
  return_logits, cache = jax.jit(dtc.prefill)(model, frames, returns, actions, rewards, slot)
  action_logits = jax.jit(dtc.extend)(model, cache, chosen)
  # The full model on the window as play has it: the return of step `slot` still the old one
  # for the return logits, the chosen one for the action logits; whatever lies after R_slot
  # (the step's action and reward, later steps) is never read.
  with_return = returns.at[jnp.arange(BATCH), slot].set(chosen)
  before, after = model(frames, returns, actions, rewards), model(frames, with_return, actions,
                                                                   rewards)
  rows = jnp.arange(BATCH)
  np.testing.assert_allclose(return_logits, before["return"][rows, slot], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(action_logits, after["action"][rows, slot], rtol=1e-5, atol=1e-5)
  assert np.asarray(return_logits).std() > 0 and np.asarray(action_logits).std() > 0


def test_later_tokens_do_not_change_the_cached_logits():
  """What follows R_slot in the window is never read: changing it changes nothing."""
  model = _model()
  frames, returns, actions, rewards = _windows()
  slot = jnp.array([0, 1, 1, 0])
  later = jnp.arange(STEPS)[None] > slot[:, None]
  noisy = [jnp.where(later.reshape(later.shape + (1,) * (x.ndim - 2)), other, x)
           for x, other in zip((frames, returns, actions, rewards), _windows(seed=1))]
  from_slot = later | (jnp.arange(STEPS)[None] == slot[:, None])  # R, a, r of the slot too
  noisy[1:] = (jnp.where(from_slot, other, x) for x, other in
               ((returns, 7 - returns), (actions, 4 - actions), (rewards, 3 - rewards)))
  got = [dtc.prefill(model, *w, slot) for w in ((frames, returns, actions, rewards), noisy)]
  np.testing.assert_array_equal(got[0][0], got[1][0])
  np.testing.assert_array_equal(dtc.extend(model, got[0][1], slot),
                                dtc.extend(model, got[1][1], slot))


def test_dropout_or_query_norms_are_refused():
  model = _model()
  model.blocks[0].attention.dropout_rate = 0.1
  with pytest.raises(ValueError, match="without dropout"):
    dtc.prefill(model, *_windows(), jnp.zeros(BATCH, jnp.int32))
