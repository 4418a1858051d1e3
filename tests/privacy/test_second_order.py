"""DP-LS, DP-Newton and DP-FC: the σ→0 limits equal their non-private closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.privacy import second_order as so



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
  w, sigmas = so.dp_least_squares(jax.random.key(1), x, y, feature_clip=1.0, sigma_gram=0.0,
                                  sigma_moment=0.0, l2=0.5)
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  ridge = np.linalg.solve(x64.T @ x64 + 0.5 * np.eye(x.shape[1]), x64.T @ y64)
  np.testing.assert_allclose(w, ridge, rtol=1e-4, atol=1e-5)
  assert sigmas == [0.0, 0.0]


def test_dp_least_squares_noise_has_the_stated_scale():
  x, y = _data()
  ws = np.stack([so.dp_least_squares(jax.random.key(s), x, y, feature_clip=1.0, sigma_gram=0.0,
                                     sigma_moment=3.0, l2=1.0)[0] for s in range(40)])
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
    w, sigmas = so.dp_newton(jax.random.key(2), x, y, feature_clip=1.0, sigma_hessian=0.0,
                             sigma_grad=0.0, l2=0.1, steps=steps)
    expected = np.zeros((x.shape[1], y.shape[1]))
    for _ in range(steps):
      expected = np.stack([_newton_step(x64, y64[:, c], expected[:, c], 0.1)
                           for c in range(y.shape[1])], axis=1)
    np.testing.assert_allclose(w, expected, rtol=2e-3, atol=2e-4)
    assert len(sigmas) == 2 * y.shape[1] * steps


def test_dp_fc_without_noise_is_covariance_preconditioned_newton():
  x, y = _data()
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  w, sigmas = so.dp_fc(jax.random.key(3), x, y, feature_clip=1.0, sigma_gram=0.0,
                       sigma_grad=0.0, l2=0.0, steps=2, learning_rate=0.7)
  expected = np.zeros((x.shape[1], y.shape[1]))
  inverse_cov = np.linalg.inv(x64.T @ x64)
  for _ in range(2):
    logits = x64 @ expected
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = expected - 0.7 * inverse_cov @ (x64.T @ (p - y64))
  np.testing.assert_allclose(w, expected, rtol=2e-3, atol=2e-4)
  assert sigmas == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("method", ["ls", "fc"])
def test_private_heads_classify_separable_features(method):
  rng = np.random.default_rng(5)
  centers = rng.normal(size=(4, 16)) * 3
  labels = rng.integers(0, 4, 2000)
  x = np.asarray(so.clip_rows(jnp.asarray(centers[labels] + rng.normal(size=(2000, 16))), 1.0))
  y = np.eye(4, dtype=np.float32)[labels]
  if method == "ls":
    w, _ = so.dp_least_squares(jax.random.key(0), x, y, feature_clip=1.0, sigma_gram=2.0,
                               sigma_moment=2.0, l2=10.0)
  else:
    w, _ = so.dp_fc(jax.random.key(0), x, y, feature_clip=1.0, sigma_gram=2.0, sigma_grad=8.0,
                    l2=10.0, steps=5)
  assert np.mean(np.argmax(x @ np.asarray(w), 1) == labels) > 0.9
