"""Gaussian diffusion in continuous time t in [0, 1]: noising, targets, guidance, DDIM.

Conventions, shared by the planner and its tests:

  - Data x0 is scaled to [-1, 1] (`clip` in the sampler assumes it).
  - z_t = alpha(t) x0 + sigma(t) eps, eps ~ N(0, I), with alpha^2 + sigma^2 = 1 (variance
    preserving). t = 0 is (almost) clean data, t = 1 (almost) pure noise.
  - `t` is always a vector [B], one time per example, broadcast over the other axes.
  - The network predicts "eps" (the noise), "v" = alpha eps - sigma x0 (Salimans & Ho 2022)
    or "x0" (the clean data). v is well conditioned at both ends: recovering x0 from an eps
    prediction divides by alpha, which is ~5e-4 at t = 1. eps and v ask the network to
    output (a scaled copy of) the noise it was given, pixel for pixel; a network that
    patchifies more values per token than it has channels (BabyAI frames at patch 4 and
    width 32: 48 noisy values into 32 channels) cannot carry them, and its samples stay
    noise. "x0" asks only for the clean frames, which lie on a low-dimensional set; the noise
    is then carried exactly by eps = (z - alpha x0) / sigma (Li & He 2025, "Back to Basics:
    Let Denoising Generative Models Denoise"; UniPi also adds the conditioning frames to the
    output, `jaxml.algos.unipi._with_base`). Its loss is weighted per example by
    `loss_weight`, 1 + min(SNR, gamma): the v-space weight 1 + SNR with the SNR capped as
    in min-SNR weighting (Hang et al. 2023), so the near-clean end does not dominate.
  - Classifier-free guidance: `guided(c, u, w) = (1 + w) c - w u`, so w = 0 is the plain
    conditional prediction.

Everything here is a pure jnp function: no parameters, no I/O. The sampler takes the model
as a closure `denoise(z, t) -> prediction`, so conditioning (first frame, text, guidance)
is the caller's business.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxml.errors import ConfigError

PREDICTIONS = ("eps", "v", "x0")

# gamma of the min-SNR cap in `loss_weight` for x0-prediction.
SNR_CAP = 5.0

# The schedule's angle is clipped so that logSNR = -2 log tan(angle) stays in
# [-LOG_SNR_LIMIT, LOG_SNR_LIMIT]: alpha(1) ~ 5.5e-4 rather than 0, so eps -> x0 stays finite.
LOG_SNR_LIMIT = 15.0


def _check(prediction: str) -> None:
  if prediction not in PREDICTIONS:
    raise ConfigError(f"diffusion prediction must be one of {PREDICTIONS}, got {prediction!r}")


def _expand(a: jax.Array, x: jax.Array) -> jax.Array:
  """[B] -> [B, 1, ..., 1] so a per-example scalar broadcasts against x [B, ...]."""
  return jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim))


def cosine_schedule(t, s: float = 0.008) -> tuple[jax.Array, jax.Array]:
  """(alpha, sigma) of the cosine schedule (Nichol & Dhariwal 2021) in angle form:
  alpha = cos(phi), sigma = sin(phi), phi = pi/2 (t + s) / (1 + s).

  The angle form keeps alpha^2 + sigma^2 = 1 exact; `s` keeps sigma(0) > 0 (logSNR(0) ~ 8.8)
  and the clip keeps alpha(1) > 0 (logSNR(1) = -LOG_SNR_LIMIT).
  """
  t = jnp.asarray(t, jnp.float32)
  phi = 0.5 * math.pi * (t + s) / (1.0 + s)
  bound = math.atan(math.exp(-0.5 * LOG_SNR_LIMIT))
  phi = jnp.clip(phi, bound, 0.5 * math.pi - bound)
  return jnp.cos(phi), jnp.sin(phi)


def log_snr(t) -> jax.Array:
  alpha, sigma = cosine_schedule(t)
  return 2.0 * (jnp.log(alpha) - jnp.log(sigma))


def add_noise(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """z_t = alpha(t) x0 + sigma(t) noise, t [B]."""
  alpha, sigma = cosine_schedule(t)
  return _expand(alpha, x0) * x0 + _expand(sigma, x0) * noise


def target(x0: jax.Array, noise: jax.Array, t: jax.Array, prediction: str) -> jax.Array:
  """What the network should output for z_t = add_noise(x0, noise, t)."""
  _check(prediction)
  if prediction == "eps":
    return noise
  if prediction == "x0":
    return x0
  alpha, sigma = cosine_schedule(t)
  return _expand(alpha, x0) * noise - _expand(sigma, x0) * x0


def loss_weight(t: jax.Array, prediction: str, snr_cap: float = SNR_CAP) -> jax.Array:
  """[B] weights of the per-example squared error: 1 for eps and v; for x0, 1 + min(SNR,
  snr_cap), i.e. the v-space weight 1 + SNR (|v - v_hat| = |x0 - x0_hat| / sigma) with the
  SNR capped so that nearly clean examples do not swamp the rest."""
  _check(prediction)
  t = jnp.asarray(t, jnp.float32)
  if prediction != "x0":
    return jnp.ones_like(t)
  return 1.0 + jnp.minimum(jnp.exp(log_snr(t)), snr_cap)


def to_x0_eps(z: jax.Array, pred: jax.Array, t: jax.Array,
              prediction: str) -> tuple[jax.Array, jax.Array]:
  """(x0_hat, eps_hat) from z_t and a prediction: the exact inverse of `target`."""
  _check(prediction)
  alpha, sigma = cosine_schedule(t)
  alpha, sigma = _expand(alpha, z), _expand(sigma, z)
  if prediction == "eps":
    return (z - sigma * pred) / alpha, pred
  if prediction == "x0":
    return pred, (z - alpha * pred) / sigma
  return alpha * z - sigma * pred, sigma * z + alpha * pred


def guided(pred_cond: jax.Array, pred_uncond: jax.Array, w) -> jax.Array:
  """Classifier-free guidance: (1 + w) cond - w uncond; w = 0 is the conditional model."""
  return (1.0 + w) * pred_cond - w * pred_uncond


def ddim_step(z: jax.Array, pred: jax.Array, t: jax.Array, t_next: jax.Array, prediction: str,
              clip: tuple[float, float] | None = (-1.0, 1.0)) -> tuple[jax.Array, jax.Array]:
  """One deterministic DDIM (eta = 0) step t -> t_next < t. Returns (z_next, x0_hat).

  With `clip`, x0_hat is clipped to the data range and, where clipping changed it, eps_hat
  is recomputed from the clipped x0 so that z = alpha x0_hat + sigma eps_hat still holds;
  elsewhere the network's eps is kept, since recomputing divides by sigma (tiny near t = 0).
  """
  x0, eps = to_x0_eps(z, pred, t, prediction)
  if clip is not None:
    clipped = jnp.clip(x0, *clip)
    alpha, sigma = cosine_schedule(t)
    consistent_eps = (z - _expand(alpha, z) * clipped) / _expand(sigma, z)
    eps = jnp.where(clipped == x0, eps, consistent_eps)
    x0 = clipped
  alpha_next, sigma_next = cosine_schedule(t_next)
  return _expand(alpha_next, z) * x0 + _expand(sigma_next, z) * eps, x0


def ddim_sample(denoise: Callable[[jax.Array, jax.Array], jax.Array], shape, key: jax.Array, *,
                steps: int, prediction: str, clip: tuple[float, float] | None = (-1.0, 1.0),
                t_max: float = 1.0) -> jax.Array:
  """x0 [shape] by deterministic DDIM from z ~ N(0, I) at t_max down to 0 in `steps`
  uniform steps. `denoise(z [B, ...], t [B]) -> prediction` is called once per step.

  Returns the last step's x0 prediction (made at t = t_max / steps) rather than z at t = 0,
  which would still hold sigma(0) ~ 0.01 of noise. The loop is a `fori_loop`, so `denoise`
  is traced once whatever `steps` is; `steps`, `prediction` and `clip` must be static.
  t_max < 1 starts pure noise at an earlier time, a truncation that trades diversity for
  fidelity (the start is then not exactly the marginal of z_{t_max}).
  """
  _check(prediction)
  if steps < 1:
    raise ConfigError(f"ddim_sample needs steps >= 1, got {steps}")
  batch = shape[0]
  z = jax.random.normal(key, shape, jnp.float32)

  def time(i):
    return jnp.full((batch,), t_max * (1.0 - i / steps), jnp.float32)

  def body(i, carry):
    z, _ = carry
    t, t_next = time(i), time(i + 1)
    return ddim_step(z, denoise(z, t), t, t_next, prediction, clip)

  _, x0 = jax.lax.fori_loop(0, steps, body, (z, jnp.zeros_like(z)))
  return x0


def sample_times(key: jax.Array, batch: int, low_discrepancy: bool = False) -> jax.Array:
  """t [batch] ~ U[0, 1). Low-discrepancy (Kingma et al. 2021): one uniform offset plus an
  even grid, which lowers the variance of the batch-mean loss at no cost."""
  if not low_discrepancy:
    return jax.random.uniform(key, (batch,))
  offset = jax.random.uniform(key, ())
  return jnp.mod(offset + jnp.arange(batch) / batch, 1.0)


def diffusion_loss(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None,
                   weight: jax.Array | None = None) -> jax.Array:
  """Mean squared error per example, times `weight` [B] (e.g. `loss_weight`), then the mean
  over examples where `mask` [B] is set (padded examples count for nothing; an all-masked
  batch gives 0, not NaN)."""
  diff = (pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2
  per_example = jnp.mean(diff.reshape(diff.shape[0], -1), axis=1)
  if weight is not None:
    per_example = per_example * weight
  if mask is None:
    return jnp.mean(per_example)
  mask = mask.astype(jnp.float32)
  return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)
