"""Private linear heads: σ→0 limits equal their non-private closed forms, the noise has the
stated scale, DP-SGD's closed-form clipping equals vmap clipping, and events match releases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dp_accounting

from jaxml.privacy import accounting, clipping
from jaxml.privacy import linear_heads as so



def _data(n=120, d=6, k=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  labels = rng.integers(0, k, n)
  x = np.asarray(so.clip_rows(jnp.asarray(x), 1.0))
  return x, np.eye(k, dtype=np.float32)[labels]


def test_clip_rows_bounds_norms_and_keeps_short_rows():
  x = np.array([[3.0, 4.0], [0.3, 0.4]], np.float32)
  out = np.asarray(so.clip_rows(jnp.asarray(x), 1.0))
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)


def test_psd_project_and_symmetric_noise():
  m = np.asarray(so.symmetric_noise(jax.random.key(0), 200, 2.0))
  np.testing.assert_array_equal(m, m.T)
  upper = m[np.triu_indices(200)]
  assert abs(upper.std() - 2.0) < 4 * 2.0 / np.sqrt(2 * upper.size)
  p = np.asarray(so.psd_project(jnp.asarray(m[:20, :20])))
  assert np.linalg.eigvalsh(p).min() > -1e-4
  psd = p @ p.T
  np.testing.assert_allclose(so.psd_project(jnp.asarray(psd)), psd, rtol=1e-3, atol=1e-3)


def test_dp_least_squares_without_noise_is_ridge():
  x, y = _data()
  w = so.LeastSquares(1.0, 0.0, 0.0, 0.5).fit(jax.random.key(1), x, y, np.ones(len(x), bool))
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  ridge = np.linalg.solve(x64.T @ x64 + 0.5 * np.eye(x.shape[1]), x64.T @ y64)
  np.testing.assert_allclose(w, ridge, rtol=1e-4, atol=1e-5)


def test_dp_least_squares_noise_has_the_stated_scale():
  x, y = _data()
  method = so.LeastSquares(1.0, 0.0, 3.0, 1.0)
  ws = np.stack([method.fit(jax.random.key(s), x, y, np.ones(len(x), bool)) for s in range(40)])
  ridge_gram = x.T @ x + np.eye(x.shape[1])
  # W - W_ridge = (XᵀX + λI)⁻¹ E with E ~ N(0, 3²): recover E and check its std.
  errors = np.einsum("ij,sjk->sik", ridge_gram, ws - ws.mean(0, keepdims=True))
  assert abs(errors.std() - 3.0) < 0.3


def _newton_step(x, y_c, w_c, l2):
  p = 1 / (1 + np.exp(-(x @ w_c)))
  grad = x.T @ (p - y_c) + l2 * w_c
  hessian = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
  return w_c - np.linalg.solve(hessian, grad)


def test_dp_newton_without_noise_is_newton():
  x, y = _data()
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  for steps in (1, 3):
    w = so.Newton(1.0, 0.0, 0.0, 0.1, steps).fit(jax.random.key(2), x, y, np.ones(len(x), bool))
    expected = np.zeros((x.shape[1], y.shape[1]))
    for _ in range(steps):
      expected = np.stack([_newton_step(x64, y64[:, c], expected[:, c], 0.1)
                           for c in range(y.shape[1])], axis=1)
    np.testing.assert_allclose(w, expected, rtol=2e-3, atol=2e-4)


def test_dp_fc_without_noise_is_covariance_preconditioned_newton():
  x, y = _data()
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  w = so.FeatureCovariance(1.0, 0.0, 0.0, 0.0, 2, 0.7).fit(jax.random.key(3), x, y,
                                                         np.ones(len(x), bool))
  expected = np.zeros((x.shape[1], y.shape[1]))
  inverse_cov = np.linalg.inv(x64.T @ x64)
  for _ in range(2):
    logits = x64 @ expected
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = expected - 0.7 * inverse_cov @ (x64.T @ (p - y64))
  np.testing.assert_allclose(w, expected, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("method", ["ls", "fc", "sgd"])
def test_private_heads_classify_separable_features(method):
  rng = np.random.default_rng(5)
  centers = rng.normal(size=(4, 16)) * 3
  labels = rng.integers(0, 4, 2000)
  x = np.asarray(so.clip_rows(jnp.asarray(centers[labels] + rng.normal(size=(2000, 16))), 1.0))
  y = np.eye(4, dtype=np.float32)[labels]
  head = {"ls": so.LeastSquares(1.0, 2.0, 2.0, 10.0),
          "fc": so.FeatureCovariance(1.0, 2.0, 8.0, 10.0, 5),
          "sgd": so.SgdHead(1.0, 2.0, 0.5, 30, 5.0)}[method]
  w = head.fit(jax.random.key(0), x, y, np.ones(len(x), bool))
  assert np.mean(np.argmax(x @ np.asarray(w), 1) == labels) > 0.9


def _reference_sgd_step(w, x, y, sampled, l2_clip):
  """One DP-SGD head step's clipped sum, through jaxml's generic vmap clipping."""
  loss = lambda w, ex: -jnp.sum(ex["y"] * jax.nn.log_softmax(ex["x"] @ w))
  batch = {"x": x, "y": y, "mask": sampled}
  return clipping.clipped_grad(loss, l2_clip)(w, batch).grads


def test_sgd_head_clipping_in_closed_form_equals_vmap_clipping():
  x, y = _data(n=64)
  valid = np.arange(64) < 60  # four padding rows
  head = so.SgdHead(l2_clip=0.3, noise_multiplier=0.0, sampling_probability=0.5, steps=1,
                    learning_rate=1.0)
  w = head.fit(jax.random.key(7), x, y, valid)
  # Recompute the step's Poisson sample the way fit draws it, then the step by vmap.
  step_key = jax.random.split(jax.random.key(7), 1)[0]
  sample_key, _ = jax.random.split(step_key)
  sampled = np.asarray(jax.random.bernoulli(sample_key, 0.5, (64,))) & valid
  assert 10 < sampled.sum() < 50
  expected = -_reference_sgd_step(jnp.zeros((6, 3)), x, y, sampled, 0.3) / (0.5 * 60)
  np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)


def test_padding_rows_change_nothing():
  x, y = _data(n=40)
  garbage = np.full((8, x.shape[1]), 50.0, np.float32)  # padding content must not matter
  xp, yp = np.concatenate([x, garbage]), np.concatenate([y, np.ones((8, 3), np.float32)])
  valid = np.arange(48) < 40
  for head in (so.LeastSquares(1.0, 0.5, 0.5, 1.0), so.Newton(1.0, 0.5, 0.5, 1.0, 2),
               so.FeatureCovariance(1.0, 0.5, 0.5, 1.0, 2),
               so.SgdHead(1.0, 0.5, 1.0, 3, 1.0)):
    key = jax.random.key(3)
    np.testing.assert_allclose(head.fit(key, xp, yp, valid),
                               head.fit(key, x, y, np.ones(40, bool)), rtol=1e-5, atol=1e-5)


def test_events_count_every_release():
  composed = lambda event: [(type(e.event).__name__, e.event.noise_multiplier, e.count)
                            for e in event.events]
  assert composed(so.LeastSquares(1.0, 2.0, 3.0, 1.0).event(5)) == [
      ("GaussianDpEvent", 2.0, 1), ("GaussianDpEvent", 3.0, 1)]
  assert composed(so.Newton(1.0, 2.0, 3.0, 1.0, steps=4).event(5)) == [
      ("GaussianDpEvent", 2.0, 20), ("GaussianDpEvent", 3.0, 20)]
  assert composed(so.FeatureCovariance(1.0, 2.0, 3.0, 1.0, steps=7).event(5)) == [
      ("GaussianDpEvent", 2.0, 1), ("GaussianDpEvent", 3.0, 7)]
  sgd = so.SgdHead(1.0, 1.5, 0.25, 9, 1.0).event(5)
  assert sgd == dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
      0.25, dp_accounting.GaussianDpEvent(1.5)), 9)


def test_releases_are_the_event_as_data():
  """What a results row records: each release's σ, count and (DP-SGD) sampling rate."""
  assert so.Newton(1.0, 2.0, 3.0, 1.0, steps=4).releases(5) == [
      {"what": "hessian", "noise_multiplier": 2.0, "count": 20},
      {"what": "gradient", "noise_multiplier": 3.0, "count": 20}]
  assert so.SgdHead(1.0, 1.5, 0.25, 9, 1.0).releases(5) == [
      {"what": "clipped gradient sum", "noise_multiplier": 1.5, "count": 9,
       "sampling_probability": 0.25}]
  assert so.FeatureCovariance(1.0, 2.0, 3.0, 1.0, steps=7).releases(5) == [
      {"what": "gram", "noise_multiplier": 2.0, "count": 1},
      {"what": "gradient", "noise_multiplier": 3.0, "count": 7}]


@pytest.mark.parametrize("cls,kwargs", [
    (so.LeastSquares, dict(l2=1.0, gram_budget=0.3)),
    (so.Newton, dict(l2=1.0, steps=3, hessian_budget=0.6)),
    (so.FeatureCovariance, dict(l2=1.0, steps=6, gram_budget=0.2)),
])
def test_calibrated_split_has_the_epsilon_of_one_gaussian(cls, kwargs):
  delta = 1e-5
  for name in ("rdp", "pld"):
    sigma = accounting.calibrate_gaussian(2.0, delta, accountant=name)
    method = cls.calibrated(sigma, feature_clip=1.0, num_classes=4, **kwargs)
    assert accounting.epsilon_of_events(method.event(4), delta, name) == pytest.approx(
        2.0, rel=3e-3)


def test_one_compilation_serves_every_noise_level():
  x, y = _data(n=32)
  traces = []

  @jax.jit
  def fit(head, key):
    traces.append(1)
    return head.fit(key, x, y, np.ones(32, bool))

  for sigma in (0.0, 1.0, 7.0):
    fit(so.FeatureCovariance.calibrated(sigma, feature_clip=1.0, l2=1.0, steps=2),
        jax.random.key(0))
  assert len(traces) == 1
