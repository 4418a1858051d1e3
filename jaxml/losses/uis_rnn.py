"""The UIS-RNN training loss, as google/uis-rnn computes it (its `fit_concatenated` and
`loss_func.py`), with masks for padding instead of its "entry is nonzero" tests.

With n the number of real observations in the batch, mu the running-mean predictions
(`jaxml/models/uis_rnn.py`) and x their targets:

  nll    = 1/n sum_{observations} sum_d (mu_d - x_d)^2 / (2 sigma2_d)
  prior  = sum_d [ (2 alpha + n + 2) / (2 n) log sigma2_d + beta / (n sigma2_d) ]
  reg    = weight * sum_{W in the GRU and mean network} ||W||_2      (not squared)

nll + prior is, divided by n, the negative log posterior of sigma2 under the Gaussian
likelihood (whose n/2 log sigma2 term is the prior's n/(2n) log sigma2) and an inverse-gamma
prior IG(alpha = sigma_alpha, beta = sigma_beta), whose minimiser in sigma2_d is
(sum of squared errors in d + 2 beta) / (n + 2 alpha + 2). `reg` is uisrnn's: the sum of each
weight tensor's Frobenius norm (biases included), times `regularization_weight`.

uisrnn finds padding by testing targets for exact zeros (an observation with a 0 entry loses
that entry); the mask here is exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def squared_errors(means: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """(mu - x)^2 [..., D] on real observations, 0 on padding (mask [...])."""
  return (means - targets) ** 2 * mask[..., None]


def negative_log_likelihood(means: jax.Array, targets: jax.Array, mask: jax.Array,
                            sigma2: jax.Array) -> jax.Array:
  """The nll term (module doc): means and targets [..., D], mask [...], sigma2 [D]; 0 for a
  batch with no real observation."""
  weighted = jnp.sum(squared_errors(means, targets, mask) / (2.0 * sigma2))
  return weighted / jnp.maximum(jnp.sum(mask), 1.0)


def sigma2_prior(sigma2: jax.Array, count: jax.Array, sigma_alpha: float,
                 sigma_beta: float) -> jax.Array:
  """The inverse-gamma prior term (module doc) for `count` real observations (>= 1 used)."""
  count = jnp.maximum(count, 1.0)
  return jnp.sum((2.0 * sigma_alpha + count + 2.0) / (2.0 * count) * jnp.log(sigma2)
                 + sigma_beta / (sigma2 * count))


def regularization(weights, weight: float) -> jax.Array:
  """`weight` times the sum of the Frobenius norms of every array in `weights` (uisrnn's
  L2 term; its gradient at an all-zero array, e.g. a fresh bias, is taken as 0)."""
  return weight * sum(optax.safe_norm(w, 0.0) for w in jax.tree.leaves(weights))


def uis_rnn_loss(means: jax.Array, targets: jax.Array, mask: jax.Array, sigma2: jax.Array,
                 rnn_weights, *, sigma_alpha: float, sigma_beta: float,
                 regularization_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, terms): nll + prior + reg (module doc) over means, targets [..., L, D] with
  mask [..., L] (any leading shape: sub-sequences of conversations and permutations);
  terms holds each part and `count`, the number of real observations."""
  count = jnp.sum(mask)
  terms = {"nll": negative_log_likelihood(means, targets, mask, sigma2),
           "prior": sigma2_prior(sigma2, count, sigma_alpha, sigma_beta),
           "regularization": regularization(rnn_weights, regularization_weight)}
  return terms["nll"] + terms["prior"] + terms["regularization"], {**terms, "count": count}
