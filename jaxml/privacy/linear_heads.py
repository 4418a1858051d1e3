"""Private linear heads on frozen features: DP least squares, DP Newton, DP-FC and DP-SGD.

The methods of Mehta et al., "Differentially Private Image Classification from Features".
Every method is a frozen dataclass holding its hyperparameters and noise multipliers, with

  fit(key, x, y, valid) -> W [d, k]      pure and jittable; x [n, d] features, y [n, k] one-hot
                                         labels, valid [n] (padding rows are zeroed first, so
                                         they add nothing to any sum)
  releases(num_classes) -> [dict]       on the host: exactly the Gaussian releases `fit` makes,
                                         as data (`release`): what a results row records
  event(num_classes)    -> DpEvent       the releases as one `dp_accounting` event (`event_of`)

so the accounting is read off the object that does the releasing and cannot drift from it, and
a recorded list of releases is enough to recompute its ε with dp_accounting alone.

Features must already have rows of L2 norm <= `feature_clip` (`clip_rows`). The releases and
their L2 sensitivities to adding or removing one example (x, y):

  release                            per-example term      sensitivity
  Gram XᵀX                           x xᵀ                  feature_clip²
  moment XᵀY                         x yᵀ                  feature_clip          (||y|| = 1)
  softmax gradient Σ x (p - y)ᵀ       x (p - y)ᵀ            feature_clip · √2     (||p - y|| <= √2)
  one-vs-rest gradient, class c      x (p_c - y_c)         feature_clip
  one-vs-rest Hessian, class c       p_c(1-p_c) x xᵀ       feature_clip² / 4
  DP-SGD clipped gradient sum        clip(x (p - y)ᵀ)      l2_clip

A release with noise multiplier σ adds N(0, (σ · sensitivity)²) per released coordinate
(symmetric matrices: the upper triangle, mirrored), so it is one `GaussianDpEvent(σ)`.
DP-SGD's are Poisson-sampled Gaussian releases. PSD projection, solves and the update rules
only post-process releases. The dataset size n is treated as public (DP-SGD divides by the
expected batch size q·n), as is usual.
"""

from __future__ import annotations

import dataclasses
import math

import dp_accounting
import jax
import jax.numpy as jnp


def clip_rows(x: jax.Array, clip: float) -> jax.Array:
  """Scales each row to L2 norm <= clip (rows already inside are unchanged)."""
  norms = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x * jnp.minimum(1.0, clip / jnp.maximum(norms, 1e-12))


def symmetric_noise(key: jax.Array, dim: int, std) -> jax.Array:
  """N(0, std²) on the upper triangle (diagonal included), mirrored: one release per entry."""
  upper = jnp.triu(std * jax.random.normal(key, (dim, dim)))
  return upper + jnp.triu(upper, 1).T


def psd_project(m: jax.Array, floor: float = 0.0) -> jax.Array:
  """The nearest (Frobenius) symmetric matrix with eigenvalues >= floor. Post-processing."""
  sym = (m + m.T) / 2
  values, vectors = jnp.linalg.eigh(sym)
  return (vectors * jnp.maximum(values, floor)) @ vectors.T


def private_gram(key, x, feature_clip: float, sigma) -> jax.Array:
  """PSD-projected XᵀX + symmetric noise of std sigma · feature_clip²."""
  return psd_project(x.T @ x + symmetric_noise(key, x.shape[1], sigma * feature_clip ** 2))


def softmax_gradient_sum(w, x, y_onehot):
  """Σᵢ xᵢ (softmax(xᵢ W) - yᵢ)ᵀ: the summed gradient of the cross-entropy, [d, k].
  Zero rows of x (padding) contribute nothing."""
  return x.T @ (jax.nn.softmax(x @ w) - y_onehot)


def noise_ridge(l2, l2_noise, noise_std, dim: int):
  """l2 plus `l2_noise` times the spectral norm (≈ 2·std·√d) of a d×d symmetric Gaussian noise
  matrix: a ridge that grows with the noise added to a Gram or Hessian, so that directions
  the noise swamps are damped at every ε with one setting. Depends only on public quantities
  (σ, the clip norm, d), so it costs no privacy."""
  return l2 + l2_noise * 2.0 * noise_std * math.sqrt(dim)


def _masked(x, y, valid):
  keep = valid.astype(x.dtype)[:, None]
  return x * keep, y * keep


def release(what: str, noise_multiplier: float, count: int,
            sampling_probability: float | None = None) -> dict:
  """`count` Gaussian releases of the statistic `what` with noise multiplier σ (noise std over
  add/remove-one sensitivity), each Poisson-subsampled with `sampling_probability` if given."""
  out = {"what": what, "noise_multiplier": float(noise_multiplier), "count": int(count)}
  if sampling_probability is not None:
    out["sampling_probability"] = float(sampling_probability)
  return out


def event_of(releases) -> dp_accounting.DpEvent:
  """The composition of `releases` (`release`), accounted under add/remove-one (one
  release's own event where there is only one)."""
  events = []
  for r in releases:
    step = dp_accounting.GaussianDpEvent(r["noise_multiplier"])
    if "sampling_probability" in r:
      step = dp_accounting.PoissonSampledDpEvent(r["sampling_probability"], step)
    if r["count"] > 0:
      events.append(dp_accounting.SelfComposedDpEvent(step, r["count"]))
  return events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(events)


def _split(sigma_total: float, fraction: float, releases: int) -> float:
  """The noise multiplier of each of `releases` Gaussians that together take `fraction` of
  the budget of one Gaussian with multiplier `sigma_total` (Gaussian RDP and PLD compose as
  1/σ² adds, so Σ fraction / σ_total² over all releases recovers 1/σ_total²)."""
  if sigma_total == 0:
    return 0.0
  return sigma_total * math.sqrt(releases / fraction)


def _pytree(*meta_fields):
  """Registers a method's dataclass as a pytree whose numbers are traced (one compilation
  serves every ε) and whose iteration counts are static."""

  def register(cls):
    data = [f.name for f in dataclasses.fields(cls) if f.name not in meta_fields]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(meta_fields))

  return register


@_pytree()
@dataclasses.dataclass(frozen=True)
class LeastSquares:
  """DP-LS: ridge regression onto one-hot targets from a private Gram and moment.

  W = (PSD(XᵀX + E₁) + l2·I)⁻¹ (XᵀY + E₂). With both sigmas 0 it is exactly ridge regression.
  """
  feature_clip: float
  sigma_gram: float
  sigma_moment: float
  l2: float
  l2_noise: float = 0.0  # ridge added per unit of Gram-noise spectral norm (`noise_ridge`)

  @classmethod
  def calibrated(cls, sigma_total: float, *, feature_clip: float, l2: float,
                 l2_noise: float = 0.0, gram_budget: float = 0.5, **unused) -> LeastSquares:
    del unused
    return cls(feature_clip, _split(sigma_total, gram_budget, 1),
               _split(sigma_total, 1 - gram_budget, 1), l2, l2_noise)

  def releases(self, num_classes: int) -> list[dict]:
    del num_classes
    return [release("gram", self.sigma_gram, 1), release("moment", self.sigma_moment, 1)]

  def event(self, num_classes: int) -> dp_accounting.DpEvent:
    return event_of(self.releases(num_classes))

  def fit(self, key, x, y, valid):
    x, y = _masked(x, y, valid)
    gram_key, moment_key = jax.random.split(key)
    gram = private_gram(gram_key, x, self.feature_clip, self.sigma_gram)
    moment = x.T @ y + self.sigma_moment * self.feature_clip * jax.random.normal(
        moment_key, (x.shape[1], y.shape[1]))
    d = x.shape[1]
    l2 = noise_ridge(self.l2, self.l2_noise, self.sigma_gram * self.feature_clip ** 2, d)
    return jnp.linalg.solve(gram + l2 * jnp.eye(d), moment)


@_pytree("steps")
@dataclasses.dataclass(frozen=True)
class Newton:
  """DP Newton: one-vs-rest logistic regression, with a private Hessian and gradient for
  every class at every iteration (the Hessian depends on W and the class, so it is released
  k · steps times: the noise DP-FC avoids). Starts from W = 0."""
  feature_clip: float
  sigma_hessian: float
  sigma_grad: float
  l2: float
  steps: int
  l2_noise: float = 0.0  # ridge per unit of Hessian-noise spectral norm (`noise_ridge`)

  @classmethod
  def calibrated(cls, sigma_total: float, *, feature_clip: float, l2: float, steps: int,
                 num_classes: int, l2_noise: float = 0.0, hessian_budget: float = 0.5,
                 **unused) -> Newton:
    del unused
    releases = num_classes * steps
    return cls(feature_clip, _split(sigma_total, hessian_budget, releases),
               _split(sigma_total, 1 - hessian_budget, releases), l2, steps, l2_noise)

  def releases(self, num_classes: int) -> list[dict]:
    count = num_classes * self.steps
    return [release("hessian", self.sigma_hessian, count),
            release("gradient", self.sigma_grad, count)]

  def event(self, num_classes: int) -> dp_accounting.DpEvent:
    return event_of(self.releases(num_classes))

  def fit(self, key, x, y, valid):
    x, y = _masked(x, y, valid)
    d, k = x.shape[1], y.shape[1]
    hessian_std = self.sigma_hessian * self.feature_clip ** 2 / 4
    l2 = noise_ridge(self.l2, self.l2_noise, hessian_std, d)

    def class_step(w_c, y_c, hess_key, grad_key):
      p = jax.nn.sigmoid(x @ w_c)
      grad = x.T @ (p - y_c) + self.sigma_grad * self.feature_clip * jax.random.normal(
          grad_key, (d,))
      hessian = (x * (p * (1 - p))[:, None]).T @ x + symmetric_noise(hess_key, d, hessian_std)
      return w_c - jnp.linalg.solve(psd_project(hessian) + l2 * jnp.eye(d), grad + l2 * w_c)

    def step(w, step_key):
      hess_keys, grad_keys = jnp.split(jax.random.split(step_key, 2 * k), 2)
      # Class by class (lax.map, not vmap): a vmapped eigh/solve over classes let XLA's CPU
      # partitioner split the class axis across devices and deadlock on 8 simulated devices.
      new_w = jax.lax.map(lambda args: class_step(*args), (w.T, y.T, hess_keys, grad_keys))
      return new_w.T, None

    w, _ = jax.lax.scan(step, jnp.zeros((d, k), x.dtype), jax.random.split(key, self.steps))
    return w


@_pytree("steps")
@dataclasses.dataclass(frozen=True)
class FeatureCovariance:
  """DP-FC: softmax regression preconditioned by one private feature covariance.

  Σ̃ = PSD(XᵀX + noise) is released once and shared by every class and iteration; each
  iteration releases the summed gradient with noise and takes
  W <- W - η (Σ̃ + l2·I)⁻¹ (g̃ + l2·W), from W = 0 (the zero-initialised head).
  With no noise and l2 = 0 it is Newton's method with XᵀX in place of the Hessian.
  """
  feature_clip: float
  sigma_gram: float
  sigma_grad: float
  l2: float
  steps: int
  learning_rate: float = 1.0
  l2_noise: float = 0.0  # ridge per unit of Gram-noise spectral norm (`noise_ridge`)

  @classmethod
  def calibrated(cls, sigma_total: float, *, feature_clip: float, l2: float, steps: int,
                 learning_rate: float = 1.0, l2_noise: float = 0.0, gram_budget: float = 0.5,
                 **unused) -> FeatureCovariance:
    del unused
    return cls(feature_clip, _split(sigma_total, gram_budget, 1),
               _split(sigma_total, 1 - gram_budget, steps), l2, steps, learning_rate, l2_noise)

  def releases(self, num_classes: int) -> list[dict]:
    del num_classes
    return [release("gram", self.sigma_gram, 1),
            release("gradient", self.sigma_grad, self.steps)]

  def event(self, num_classes: int) -> dp_accounting.DpEvent:
    return event_of(self.releases(num_classes))

  def fit(self, key, x, y, valid):
    x, y = _masked(x, y, valid)
    d, k = x.shape[1], y.shape[1]
    gram_key, grad_key = jax.random.split(key)
    gram = private_gram(gram_key, x, self.feature_clip, self.sigma_gram)
    # The ridge damps noisy directions of the preconditioner only; the objective's own l2
    # (the `+ l2·W` term) is `self.l2`.
    ridge = noise_ridge(self.l2, self.l2_noise, self.sigma_gram * self.feature_clip ** 2, d)
    factor = jax.scipy.linalg.cho_factor(gram + ridge * jnp.eye(d))
    grad_std = self.sigma_grad * self.feature_clip * jnp.sqrt(2.0)

    def step(w, step_key):
      noisy = softmax_gradient_sum(w, x, y) + grad_std * jax.random.normal(step_key, (d, k))
      return w - self.learning_rate * jax.scipy.linalg.cho_solve(factor, noisy + self.l2 * w), None

    w, _ = jax.lax.scan(step, jnp.zeros((d, k), x.dtype), jax.random.split(grad_key, self.steps))
    return w


@_pytree("steps")
@dataclasses.dataclass(frozen=True)
class SgdHead:
  """DP-SGD on the softmax head from W = 0: Poisson-sampled batches (each row joins with
  probability `sampling_probability`; 1.0 is full-batch DP gradient descent), per-example
  gradients clipped to `l2_clip`, Gaussian noise, divided by the expected batch size.

  A linear head's per-example gradient is the outer product x (p - y)ᵀ, so its norm is
  ||x|| · ||p - y||: clipping needs no per-example gradient (ghost clipping in closed form).
  """
  l2_clip: float
  noise_multiplier: float
  sampling_probability: float
  steps: int
  learning_rate: float
  l2: float = 0.0

  def releases(self, num_classes: int) -> list[dict]:
    del num_classes
    return [release("clipped gradient sum", self.noise_multiplier, self.steps,
                    self.sampling_probability)]

  def event(self, num_classes: int) -> dp_accounting.DpEvent:
    return event_of(self.releases(num_classes))

  def fit(self, key, x, y, valid):
    x, y = _masked(x, y, valid)
    d, k = x.shape[1], y.shape[1]
    expected_batch = self.sampling_probability * jnp.sum(valid)

    def step(w, step_key):
      sample_key, noise_key = jax.random.split(step_key)
      sampled = jax.random.bernoulli(sample_key, self.sampling_probability, valid.shape) & valid
      residual = jax.nn.softmax(x @ w) - y
      norms = jnp.linalg.norm(x, axis=1) * jnp.linalg.norm(residual, axis=1)
      factors = jnp.where(sampled, jnp.minimum(1.0, self.l2_clip / jnp.maximum(norms, 1e-12)),
                          0.0)
      clipped_sum = x.T @ (residual * factors[:, None])
      noisy = clipped_sum + self.noise_multiplier * self.l2_clip * jax.random.normal(
          noise_key, (d, k))
      return w - self.learning_rate * (noisy / expected_batch + self.l2 * w), None

    w, _ = jax.lax.scan(step, jnp.zeros((d, k), x.dtype), jax.random.split(key, self.steps))
    return w
