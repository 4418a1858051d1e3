"""Private linear heads from features: DP least squares, DP Newton and DP-FC (Mehta et al.).

Every function here takes features whose rows are already clipped to L2 norm <= `feature_clip`
(`clip_rows`) and one-hot labels, and releases only Gaussian-mechanism outputs:

  release                          per-example term     L2 sensitivity (add/remove one row)
  Gram     XᵀX                      x xᵀ                  feature_clip²
  moment   XᵀY                      x yᵀ                  feature_clip      (||y|| = 1)
  softmax gradient Σ x (p - y)ᵀ      x (p - y)ᵀ            feature_clip · √2 (||p - y|| <= √2)
  logistic Hessian of class c       p(1-p) x xᵀ           feature_clip² / 4

Each release with noise multiplier σ adds N(0, (σ · sensitivity)²) per released coordinate
(symmetric matrices: the upper triangle, mirrored), so it is one `GaussianDpEvent(σ)`; the
caller composes them in `jaxml.privacy.accounting`. Functions return the head and the list of
noise multipliers they used, so the accounting cannot drift from what was released.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def clip_rows(x: jax.Array, clip: float) -> jax.Array:
  """Scales each row to L2 norm <= clip (rows already inside are unchanged)."""
  norms = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x * jnp.minimum(1.0, clip / jnp.maximum(norms, 1e-12))


def symmetric_noise(key: jax.Array, dim: int, std: float) -> jax.Array:
  """N(0, std²) on the upper triangle (diagonal included), mirrored: one release per entry."""
  upper = jnp.triu(std * jax.random.normal(key, (dim, dim)))
  return upper + jnp.triu(upper, 1).T


def psd_project(m: jax.Array, floor: float = 0.0) -> jax.Array:
  """The nearest (Frobenius) symmetric matrix with eigenvalues >= floor. Post-processing."""
  sym = (m + m.T) / 2
  values, vectors = jnp.linalg.eigh(sym)
  return (vectors * jnp.maximum(values, floor)) @ vectors.T


def private_gram(key, x, feature_clip: float, sigma: float) -> jax.Array:
  """PSD-projected XᵀX + symmetric noise of std sigma · feature_clip²."""
  gram = x.T @ x + symmetric_noise(key, x.shape[1], sigma * feature_clip ** 2)
  return psd_project(gram)


def dp_least_squares(key, x, y_onehot, *, feature_clip: float, sigma_gram: float,
                     sigma_moment: float, l2: float):
  """Ridge regression onto one-hot targets from a private Gram and moment: (W [d, k], [σ...]).

  With both sigmas 0 this is exactly ridge regression: W = (XᵀX + l2·I)⁻¹ XᵀY.
  """
  gram_key, moment_key = jax.random.split(key)
  gram = private_gram(gram_key, x, feature_clip, sigma_gram)
  moment = x.T @ y_onehot + sigma_moment * feature_clip * jax.random.normal(
      moment_key, (x.shape[1], y_onehot.shape[1]))
  w = jnp.linalg.solve(gram + l2 * jnp.eye(x.shape[1]), moment)
  return w, [sigma_gram, sigma_moment]


def softmax_gradient_sum(w, x, y_onehot, mask=None):
  """Σᵢ xᵢ (softmax(xᵢ W) - yᵢ)ᵀ: the summed gradient of the cross-entropy, [d, k]."""
  residual = jax.nn.softmax(x @ w) - y_onehot
  if mask is not None:
    residual = jnp.where(mask[:, None], residual, 0.0)
  return x.T @ residual


def dp_fc(key, x, y_onehot, *, feature_clip: float, sigma_gram: float, sigma_grad: float,
          l2: float, steps: int, learning_rate: float = 1.0):
  """DP-FC: softmax regression preconditioned by one private feature covariance.

  Σ̃ = PSD(XᵀX + noise) is released once and shared by all classes and iterations; each
  iteration releases the summed gradient with noise and takes
  W <- W - η (Σ̃ + l2·I)⁻¹ (g̃ + l2·W), starting from W = 0 (zero-initialised head).
  Returns (W, [sigma_gram] + [sigma_grad] * steps).
  """
  gram_key, grad_key = jax.random.split(key)
  d, k = x.shape[1], y_onehot.shape[1]
  precondition = jnp.linalg.inv(private_gram(gram_key, x, feature_clip, sigma_gram)
                                + l2 * jnp.eye(d))
  grad_std = sigma_grad * feature_clip * jnp.sqrt(2.0)

  def step(w, step_key):
    noisy = softmax_gradient_sum(w, x, y_onehot) + grad_std * jax.random.normal(step_key, (d, k))
    return w - learning_rate * precondition @ (noisy + l2 * w), None

  w, _ = jax.lax.scan(step, jnp.zeros((d, k)), jax.random.split(grad_key, steps))
  return w, [sigma_gram] + [sigma_grad] * steps


def dp_newton(key, x, y_onehot, *, feature_clip: float, sigma_hessian: float,
              sigma_grad: float, l2: float, steps: int):
  """One-vs-rest logistic regression by Newton's method with a private Hessian and gradient
  per class and iteration (the Hessian depends on W and the class, so it is released
  k · steps times — the noise DP-FC avoids). Returns (W [d, k], noise multipliers)."""
  d, k = x.shape[1], y_onehot.shape[1]

  def class_step(w_c, y_c, hess_key, grad_key):
    p = jax.nn.sigmoid(x @ w_c)
    grad = x.T @ (p - y_c) + sigma_grad * feature_clip * jax.random.normal(grad_key, (d,))
    hessian = (x * (p * (1 - p))[:, None]).T @ x + symmetric_noise(
        hess_key, d, sigma_hessian * feature_clip ** 2 / 4)
    return w_c - jnp.linalg.solve(psd_project(hessian) + l2 * jnp.eye(d), grad + l2 * w_c)

  def step(w, step_key):
    hess_keys, grad_keys = jnp.split(jax.random.split(step_key, 2 * k), 2)
    w = jax.vmap(class_step, in_axes=(1, 1, 0, 0), out_axes=1)(w, y_onehot, hess_keys,
                                                               grad_keys)
    return w, None

  w, _ = jax.lax.scan(step, jnp.zeros((d, k)), jax.random.split(key, steps))
  return w, [sigma_hessian, sigma_grad] * (k * steps)
