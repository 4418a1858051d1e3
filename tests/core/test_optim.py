"""Optimizers and schedules (restarted, too) from a config block, against closed forms written
out here."""

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxml.core import optim
from jaxml.errors import ConfigError

LR = 0.1


def _opt(**fields):
  return ml_collections.ConfigDict({"name": "sgd", "learning_rate": LR, **fields})


def _reference_lr(step, *, lr, warmup, num_steps, schedule):
  """Linear 0 -> lr over `warmup` steps, then cosine to 0 at `num_steps` (or constant)."""
  if step < warmup:
    return lr * step / warmup
  if schedule == "constant":
    return lr
  decay = max(num_steps - warmup, 1)
  return lr * 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))


@pytest.mark.parametrize("schedule,warmup", [("cosine", 10), ("cosine", 0), ("constant", 10),
                                             ("constant", 0)])
def test_schedule_is_warmup_then_cosine_or_constant(schedule, warmup):
  num_steps = 100
  fn = optim.make_schedule(_opt(schedule=schedule, warmup_steps=warmup), num_steps)
  steps = [0, 1, 5, 9, 10, 11, 40, 55, 99, 100, 130]
  got = [float(fn(s)) for s in steps]
  want = [_reference_lr(s, lr=LR, warmup=warmup, num_steps=num_steps, schedule=schedule)
          for s in steps]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
  # Landmarks: the peak right after warmup; cosine is half way at the midpoint, 0 at the end.
  assert float(fn(warmup)) == pytest.approx(LR)
  if schedule == "cosine":
    assert float(fn(warmup + (num_steps - warmup) // 2)) == pytest.approx(LR / 2, rel=1e-2)
    assert float(fn(num_steps)) == pytest.approx(0.0, abs=1e-8)
  else:
    assert float(fn(num_steps)) == pytest.approx(LR)


def test_schedule_defaults_to_cosine_without_warmup():
  fn = optim.make_schedule(ml_collections.ConfigDict({"learning_rate": 1.0}), 20)
  assert float(fn(0)) == pytest.approx(1.0)
  assert float(fn(10)) == pytest.approx(0.5)
  assert float(fn(20)) == pytest.approx(0.0, abs=1e-7)


def test_restarted_schedule_runs_afresh_over_each_segment():
  """restarts (30, 70) of 100 steps: warmup and cosine over 30, 40 and 30 steps in turn."""
  fn = optim.make_schedule(_opt(warmup_steps=5), 100, restarts=(30, 70))
  for start, stop in ((0, 30), (30, 70), (70, 100)):
    for step in range(start, stop, 3):
      want = _reference_lr(step - start, lr=LR, warmup=5, num_steps=stop - start,
                           schedule="cosine")
      assert float(fn(step)) == pytest.approx(want, rel=1e-5, abs=1e-8), step
  assert float(fn(35)) == pytest.approx(LR)  # the full rate again after the second warmup
  for bad in ((30, 30), (0, 50), (50, 100)):
    with pytest.raises(ValueError, match="must increase within"):
      optim.make_schedule(_opt(), 100, restarts=bad)


def test_unknown_schedule_and_optimizer_are_config_errors():
  with pytest.raises(ConfigError, match="optimizer.schedule='linear' must be one of cosine"):
    optim.make_schedule(_opt(schedule="linear"), 10)
  with pytest.raises(ConfigError, match="optimizer.name='adamww' is not an optax optimizer"):
    optim.make_optimizer(_opt(name="adamww"), 10)
  # An optax attribute that is not a constructor (a module) is refused the same way.
  with pytest.raises(ConfigError, match="optimizer.name='tree_utils'"):
    optim.make_optimizer(_opt(name="tree_utils"), 10)


def _updates(tx, grads_per_step, params):
  """The updates `tx` returns for each gradient in turn (params held fixed)."""
  state = tx.init(params)
  out = []
  for grads in grads_per_step:
    updates, state = tx.update(grads, state, params)
    out.append({k: np.asarray(v) for k, v in updates.items()})
  return out


PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([3.0])}
G1 = {"w": jnp.array([0.3, 0.1, -0.2]), "b": jnp.array([0.4])}
G2 = {"w": jnp.array([-0.1, 0.2, 0.05]), "b": jnp.array([-0.3])}


def test_sgd_follows_the_schedule_with_momentum():
  tx = optim.make_optimizer(_opt(momentum=0.9, warmup_steps=2, schedule="constant"), 10)
  u = _updates(tx, [G1, G2, G1], PARAMS)
  # Warmup: lr 0 then lr/2 then lr; momentum trace g_t + 0.9 trace_{t-1}.
  trace1 = {k: np.asarray(G1[k]) for k in G1}
  trace2 = {k: np.asarray(G2[k]) + 0.9 * trace1[k] for k in G1}
  trace3 = {k: np.asarray(G1[k]) + 0.9 * trace2[k] for k in G1}
  for k in PARAMS:
    np.testing.assert_allclose(u[0][k], 0.0, atol=1e-8)
    np.testing.assert_allclose(u[1][k], -LR / 2 * trace2[k], rtol=1e-5)
    np.testing.assert_allclose(u[2][k], -LR * trace3[k], rtol=1e-5)


def test_sgd_weight_decay_is_l2_added_to_the_gradient():
  wd = 0.01
  tx = optim.make_optimizer(_opt(weight_decay=wd, schedule="constant"), 10)
  (u,) = _updates(tx, [G1], PARAMS)
  for k in PARAMS:
    np.testing.assert_allclose(u[k], -LR * (np.asarray(G1[k]) + wd * np.asarray(PARAMS[k])),
                               rtol=1e-5)


def test_adamw_weight_decay_is_decoupled():
  wd, eps = 0.05, 1e-8
  tx = optim.make_optimizer(_opt(name="adamw", weight_decay=wd, schedule="constant"), 10)
  (u,) = _updates(tx, [G1], PARAMS)
  # Adam's first bias-corrected step is g / (|g| + eps); the decay is added after scaling
  # by the learning rate, not passed through the moment estimates.
  for k in PARAMS:
    g, p = np.asarray(G1[k]), np.asarray(PARAMS[k])
    np.testing.assert_allclose(u[k], -LR * (g / (np.abs(g) + eps) + wd * p), rtol=1e-5)
  # Without decay the same step has no parameter term.
  (plain,) = _updates(optim.make_optimizer(_opt(name="adamw", schedule="constant"), 10), [G1],
                      PARAMS)
  for k in PARAMS:
    np.testing.assert_allclose(u[k] - plain[k], -LR * wd * np.asarray(PARAMS[k]), rtol=1e-4)


def _global_norm(tree):
  return math.sqrt(sum(float(jnp.sum(jnp.square(v))) for v in tree.values()))


@pytest.mark.parametrize("clip", [0.1, 100.0])
def test_clip_global_norm_scales_the_raw_gradient(clip):
  wd = 0.01
  tx = optim.make_optimizer(_opt(weight_decay=wd, clip_global_norm=clip, schedule="constant"),
                            10)
  (u,) = _updates(tx, [G1], PARAMS)
  norm = _global_norm(G1)
  scale = min(1.0, clip / norm)  # a no-op when the gradient is already within the bound
  for k in PARAMS:
    g, p = np.asarray(G1[k]), np.asarray(PARAMS[k])
    # Clipping applies to the gradient only; the L2 term is added after it.
    np.testing.assert_allclose(u[k], -LR * (scale * g + wd * p), rtol=1e-5)
  # The clipped gradient's global norm is the bound.
  if clip < norm:
    (no_decay,) = _updates(optim.make_optimizer(
        _opt(clip_global_norm=clip, schedule="constant"), 10), [G1], PARAMS)
    assert _global_norm(no_decay) == pytest.approx(LR * clip, rel=1e-5)
