"""Decision Transformer layout: token order, attention mask, heads one token before targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxml import models
from jaxml.errors import ConfigError
from jaxml.models import decision_transformer as dt


def _model(**kw):
  args = dict(image_shape=(4, 4, 2), patch_size=2, num_actions=5, num_return_bins=8, context=3,
              width=16, depth=2, num_heads=2)
  args.update(kw)
  return dt.DecisionTransformer(**args, rngs=nnx.Rngs(0))


def _inputs(steps=3, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(2, steps, 4, 4, 2)), jnp.float32),
          jnp.asarray(rng.integers(0, 8, (2, steps))), jnp.asarray(rng.integers(0, 5, (2, steps))),
          jnp.asarray(rng.integers(0, 4, (2, steps))))


def test_return_bins_round_trip_and_clip():
  bins = dt.ReturnBins(-20.0, 100.0, 120)
  b = np.arange(120)
  np.testing.assert_array_equal(bins.encode(bins.decode(b)), b)
  returns = np.linspace(-20, 99.99, 500)
  assert np.abs(np.asarray(bins.decode(bins.encode(returns))) - returns).max() <= 0.5 + 1e-4
  np.testing.assert_array_equal(bins.encode([-1e3, 1e3]), [0, 119])
  with pytest.raises(ConfigError):
    dt.ReturnBins(1.0, 1.0, 10)


def test_reward_classes():
  got = dt.encode_reward(jnp.array([0.0, 2.0, -1.0, 5.0, 0.0]),
                         jnp.array([False, False, False, True, True]))
  np.testing.assert_array_equal(got, [dt.REWARD_ZERO, dt.REWARD_POSITIVE, dt.REWARD_NEGATIVE,
                                      dt.REWARD_TERMINAL, dt.REWARD_TERMINAL])


def test_attention_mask_structure():
  mask = dt.attention_mask(steps=2, patches=2)  # tokens: p p R a r | p p R a r
  expected = np.tril(np.ones((10, 10), bool))
  for start in (0, 5):  # the two patches of a frame see each other
    expected[start, start + 1] = True
  np.testing.assert_array_equal(mask, expected)
  assert dt.token_indices(2) == {"last_patch": 1, "return": 2, "action": 3, "reward": 4}


def test_patchify_is_row_major_patches():
  frames = jnp.arange(4 * 4 * 1, dtype=jnp.float32).reshape(1, 4, 4, 1)
  patches = dt.patchify(frames, 2)
  np.testing.assert_array_equal(patches[0, 0], [0, 1, 4, 5])
  np.testing.assert_array_equal(patches[0, 1], [2, 3, 6, 7])
  np.testing.assert_array_equal(patches[0, 3], [10, 11, 14, 15])


def _changed(model, inputs, which, step):
  """Which step's logits change when input `which` of step `step` is altered."""
  base = model(*inputs)
  altered = list(inputs)
  if which == 0:
    altered[0] = altered[0].at[:, step].add(1.0)
  else:
    altered[which] = altered[which].at[:, step].set((altered[which][:, step] + 1) % 4)
  new = model(*altered)
  return {head: [bool(jnp.any(jnp.abs(new[head][:, t] - base[head][:, t]) > 1e-6))
                 for t in range(inputs[1].shape[1])] for head in base}


def test_each_head_sees_only_tokens_before_its_target():
  model, inputs = _model(), _inputs()
  # A frame at step 1 informs that step's return (read at its last patch) and everything after.
  assert _changed(model, inputs, 0, 1) == {
      "return": [False, True, True], "action": [False, True, True], "reward": [False, True, True]}
  # R_1 is not visible to its own return head, but is to the action head (read at R_1).
  assert _changed(model, inputs, 1, 1) == {
      "return": [False, False, True], "action": [False, True, True], "reward": [False, True, True]}
  # a_1 is visible to the reward head (read at a_1), not to the action head (read at R_1).
  assert _changed(model, inputs, 2, 1) == {
      "return": [False, False, True], "action": [False, False, True], "reward": [False, True, True]}
  # r_1 only informs later steps.
  assert _changed(model, inputs, 3, 1) == {
      "return": [False, False, True], "action": [False, False, True],
      "reward": [False, False, True]}


def test_single_return_token_conditions_on_the_first_return_only():
  mask = dt.attention_mask(steps=2, patches=2, single_return_token=True)
  hidden = 5 + 2  # the second step's return token
  expected = dt.attention_mask(steps=2, patches=2)
  expected[:, hidden] = False
  expected[hidden, hidden] = True
  np.testing.assert_array_equal(mask, expected)

  model, inputs = _model(single_return_token=True), _inputs()
  never = {"return": [False] * 3, "action": [False] * 3, "reward": [False] * 3}
  assert _changed(model, inputs, 1, 1) == never
  assert _changed(model, inputs, 1, 2) == never
  # R_0 conditions every later action, as in the default mode.
  assert _changed(model, inputs, 1, 0) == {
      "return": [False, True, True], "action": [True, True, True], "reward": [True, True, True]}


def test_attention_weights_are_distributions_under_the_mask():
  model, inputs = _model(single_return_token=True), _inputs()
  weights = np.asarray(model.attention_weights(*inputs))
  assert weights.shape == (2, 2, 2, 21, 21)  # depth, batch, heads, 3 steps of 4 + 3 tokens
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  allowed = dt.attention_mask(3, 4, single_return_token=True)
  assert np.abs(np.where(allowed, 0.0, weights)).max() == 0.0
  # Reading the weights leaves the model as it was (nothing sown stays behind).
  assert not nnx.state(model, nnx.Intermediate)
  np.testing.assert_array_equal(model(*inputs)["action"], model(*inputs)["action"])


def test_shapes_and_valid_action_mask():
  model, inputs = _model(), _inputs()
  allowed = jnp.array([[True, True, False, False, True], [True] * 5])
  out = model(*inputs, action_mask=allowed)
  assert out["return"].shape == (2, 3, 8) and out["reward"].shape == (2, 3, 4)
  probs = jax.nn.softmax(out["action"], -1)
  np.testing.assert_allclose(probs[0, :, 2:4], 0.0, atol=1e-12)
  assert float(probs[1].min()) > 0
  with pytest.raises(ValueError, match="context"):
    model(*_inputs(steps=4))
  with pytest.raises(ConfigError, match="patches"):
    _model(image_shape=(5, 4, 2))


def test_not_listed_as_a_classifier():
  assert "decision_transformer" not in models.available()
