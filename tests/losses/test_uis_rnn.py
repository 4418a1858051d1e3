"""The UIS-RNN loss: a looped NumPy reference, uisrnn's own loss functions, padding, the order
of sub-sequences, and the sigma2 that minimises it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.losses import uis_rnn as loss_lib

D = 3
SETTINGS = {"sigma_alpha": 1.5, "sigma_beta": 0.7, "regularization_weight": 1e-2}


def sample(seed=0, lengths=(4, 1, 6), length=6):
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(len(lengths), length, D)).astype(np.float32)
  targets = rng.normal(size=(len(lengths), length, D)).astype(np.float32)
  mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.float32)
  weights = {"kernel": rng.normal(size=(D, 4)).astype(np.float32),
             "bias": rng.normal(size=(4,)).astype(np.float32)}
  sigma2 = np.array([0.1, 0.5, 2.0], np.float32)
  return means, targets, mask, sigma2, weights


def reference(means, targets, mask, sigma2, weights, sigma_alpha, sigma_beta,
              regularization_weight):
  """One observation at a time, in float64."""
  nll, n = 0.0, 0
  for i in range(means.shape[0]):
    for t in range(means.shape[1]):
      if mask[i, t]:
        n += 1
        for d in range(D):
          nll += (means[i, t, d] - targets[i, t, d]) ** 2 / (2 * sigma2[d])
  prior = sum((2 * sigma_alpha + n + 2) / (2 * n) * np.log(s) + sigma_beta / (s * n)
              for s in sigma2.astype(np.float64))
  reg = regularization_weight * sum(np.sqrt(np.sum(np.square(w, dtype=np.float64)))
                                    for w in weights.values())
  return nll / n + prior + reg, n


def loss(means, targets, mask, sigma2, weights, **settings):
  return loss_lib.uis_rnn_loss(means, targets, mask, sigma2, weights, **{**SETTINGS, **settings})


def test_equals_a_looped_reference():
  args = sample()
  value, terms = jax.jit(loss)(*args)
  expected, n = reference(*args, **SETTINGS)
  assert float(value) == pytest.approx(expected, rel=1e-5)
  assert float(terms["count"]) == n == 11
  assert float(terms["nll"] + terms["prior"] + terms["regularization"]) == pytest.approx(
      float(value), rel=1e-6)


def test_equals_uisrnn_loss_functions():
  torch = pytest.importorskip("torch")
  loss_func = pytest.importorskip("uisrnn.loss_func")
  means, targets, mask, sigma2, weights = sample(1)
  # uisrnn's layout: [T, B, D], zeros past each sequence's end, padding found as zeros.
  truth = torch.tensor(np.ascontiguousarray(np.swapaxes(targets * mask[..., None], 0, 1)))
  mean = torch.tensor(np.ascontiguousarray(np.swapaxes(means, 0, 1)))
  s2 = torch.tensor(sigma2)
  masked = (truth != 0).float() * mean
  loss1 = loss_func.weighted_mse_loss(input_tensor=masked, target_tensor=truth, weight=1 / (2 * s2))
  error = ((masked - truth) ** 2).view(-1, D)
  num_non_zero = torch.sum((error != 0).float(), dim=0).squeeze()
  loss2 = loss_func.sigma2_prior_loss(num_non_zero, SETTINGS["sigma_alpha"],
                                      SETTINGS["sigma_beta"], s2)
  loss3 = loss_func.regularization_loss([torch.tensor(w) for w in weights.values()],
                                        SETTINGS["regularization_weight"])
  _, terms = loss(means, targets, mask, sigma2, weights)
  assert float(terms["nll"]) == pytest.approx(float(loss1), rel=1e-5)
  assert float(terms["prior"]) == pytest.approx(float(loss2), rel=1e-5)
  assert float(terms["regularization"]) == pytest.approx(float(loss3), rel=1e-5)


def test_padding_and_the_order_of_subsequences_do_not_change_it():
  means, targets, mask, sigma2, weights = sample(2)
  value, _ = loss(means, targets, mask, sigma2, weights)
  # Garbage on the padding, longer padding and an all-padding sub-sequence.
  garbage = lambda a: np.where(mask[..., None] > 0, a, 9.0)
  wide = lambda a, fill: np.concatenate(
      [np.concatenate([a, np.full((a.shape[0], 3, *a.shape[2:]), fill, a.dtype)], 1),
       np.full((1, a.shape[1] + 3, *a.shape[2:]), fill, a.dtype)], 0)
  padded, _ = loss(wide(garbage(means), 5.0), wide(garbage(targets), -4.0), wide(mask, 0.0),
                   sigma2, weights)
  assert float(padded) == pytest.approx(float(value), rel=1e-6)
  order = [2, 0, 1]
  shuffled, _ = loss(means[order], targets[order], mask[order], sigma2, weights)
  assert float(shuffled) == pytest.approx(float(value), rel=1e-6)


def test_sigma2_minimiser_is_the_inverse_gamma_posterior_mode():
  """d loss / d sigma2_d = 0 at (sum of squared errors in d + 2 beta) / (n + 2 alpha + 2)."""
  means, targets, mask, _, weights = sample(3)
  errors = ((means - targets) ** 2 * mask[..., None]).reshape(-1, D).sum(0)
  n = mask.sum()
  best = (errors + 2 * SETTINGS["sigma_beta"]) / (n + 2 * SETTINGS["sigma_alpha"] + 2)
  grad = jax.grad(lambda s: loss(means, targets, mask, s, weights)[0])(jnp.asarray(best))
  np.testing.assert_allclose(grad, 0.0, atol=1e-5)


def test_regularization_gradient_is_finite_at_zero_weights():
  grad = jax.grad(lambda w: loss_lib.regularization(w, 1.0))({"bias": jnp.zeros(4)})
  assert np.all(np.isfinite(grad["bias"]))


def test_no_real_observation_gives_finite_values():
  means, targets, mask, sigma2, weights = sample(4)
  value, terms = loss(means, targets, np.zeros_like(mask), sigma2, weights)
  assert np.isfinite(float(value)) and float(terms["nll"]) == 0.0
