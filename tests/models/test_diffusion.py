"""Diffusion maths: schedule, exact inverses, guidance, and DDIM with oracle denoisers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxml.errors import ConfigError
from jaxml.models import diffusion


def _data(seed=0, batch=4, shape=(3, 5)):
  rng = np.random.default_rng(seed)
  x0 = jnp.asarray(rng.uniform(-1, 1, (batch, *shape)), jnp.float32)
  noise = jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)
  return x0, noise


def _single_point_oracle(x0, prediction):
  """The exact denoiser when the data is the single point x0: eps = (z - alpha x0) / sigma."""
  def denoise(z, t):
    alpha, sigma = diffusion.cosine_schedule(t)
    alpha, sigma = alpha[:, None], sigma[:, None]
    eps = (z - alpha * x0) / sigma
    return {"eps": eps, "v": alpha * eps - sigma * x0,
            "x0": jnp.broadcast_to(x0, z.shape)}[prediction]
  return denoise


def test_schedule_endpoints_and_variance_preserving():
  t = jnp.linspace(0, 1, 101)
  alpha, sigma = diffusion.cosine_schedule(t)
  np.testing.assert_allclose(alpha ** 2 + sigma ** 2, 1.0, atol=1e-6)
  assert alpha[0] > 0.9999 and sigma[0] < 0.02
  assert 0 < alpha[-1] < 1e-3 and sigma[-1] > 0.9999
  assert np.all(np.diff(np.asarray(alpha)) < 0)  # noise increases monotonically
  log_snr = diffusion.log_snr(t)
  assert np.all(np.isfinite(log_snr))
  np.testing.assert_allclose(log_snr[-1], -diffusion.LOG_SNR_LIMIT, atol=1e-2)


@pytest.mark.parametrize("prediction", diffusion.PREDICTIONS)
def test_oracle_prediction_recovers_x0_and_noise(prediction):
  x0, noise = _data()
  # eps -> x0 divides by alpha, which vanishes at t = 1; v is well conditioned throughout.
  t_high = 0.9 if prediction == "eps" else 1.0
  t = jnp.array([0.0, 0.3, 0.7, t_high])
  z = diffusion.add_noise(x0, noise, t)
  x0_hat, eps_hat = diffusion.to_x0_eps(z, diffusion.target(x0, noise, t, prediction), t,
                                        prediction)
  np.testing.assert_allclose(x0_hat, x0, atol=1e-5)
  # eps from v multiplies by alpha ~ 1 at t = 0; from z alone it would divide by sigma.
  np.testing.assert_allclose(eps_hat, noise, atol=1e-5)


def test_v_target_definition():
  x0, noise = _data()
  t = jnp.array([0.1, 0.4, 0.6, 0.95])
  alpha, sigma = diffusion.cosine_schedule(t)
  expected = alpha[:, None, None] * noise - sigma[:, None, None] * x0
  np.testing.assert_allclose(diffusion.target(x0, noise, t, "v"), expected, atol=1e-6)
  np.testing.assert_array_equal(diffusion.target(x0, noise, t, "eps"), noise)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 16), t=st.floats(0.0, 1.0))
def test_v_and_eps_conversions_are_inverses(seed, t):
  x0, noise = _data(seed, batch=2)
  t = jnp.full((2,), t, jnp.float32)
  z = diffusion.add_noise(x0, noise, t)
  v = diffusion.target(x0, noise, t, "v")
  x0_v, eps_v = diffusion.to_x0_eps(z, v, t, "v")
  # v -> eps -> v round trip: v = alpha eps - sigma x0 with the recovered pair.
  alpha, sigma = diffusion.cosine_schedule(t)
  np.testing.assert_allclose(alpha[:, None, None] * eps_v - sigma[:, None, None] * x0_v, v,
                             atol=1e-5)
  np.testing.assert_allclose(alpha[:, None, None] * x0_v + sigma[:, None, None] * eps_v, z,
                             atol=1e-5)


def test_guidance_combines_as_specified():
  cond, uncond = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
  np.testing.assert_array_equal(diffusion.guided(cond, uncond, 0.0), cond)
  np.testing.assert_allclose(diffusion.guided(cond, uncond, 2.0), 3 * cond - 2 * uncond)


@pytest.mark.parametrize("prediction", diffusion.PREDICTIONS)
@pytest.mark.parametrize("steps", [1, 5, 50])
def test_ddim_with_single_point_oracle_lands_on_the_point(prediction, steps):
  x0 = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (3, 6)), jnp.float32)
  got = diffusion.ddim_sample(_single_point_oracle(x0, prediction), x0.shape,
                              jax.random.key(steps), steps=steps, prediction=prediction)
  # At 1 step with eps, x0 is read at t = 1 where alpha ~ 5e-4 amplifies rounding.
  np.testing.assert_allclose(got, x0, atol=1e-3 if steps == 1 else 1e-5)


def test_ddim_with_two_point_posterior_mean_lands_near_a_point():
  points = jnp.array([[0.6, -0.4, 0.2, 0.8], [-0.5, 0.5, -0.7, -0.1]])

  def denoise(z, t):  # E[eps | z] under the mixture of two equally likely points
    alpha, sigma = diffusion.cosine_schedule(t)
    alpha, sigma = alpha[:, None], sigma[:, None]
    sq = jnp.sum((z[:, None, :] - alpha[:, :, None] * points[None]) ** 2, axis=-1)
    weights = jax.nn.softmax(-sq / (2 * sigma ** 2), axis=1)
    return (z - alpha * (weights @ points)) / sigma

  samples = diffusion.ddim_sample(denoise, (64, 4), jax.random.key(0), steps=50,
                                  prediction="eps")
  distance = jnp.linalg.norm(samples[:, None] - points[None], axis=-1)
  assert float(distance.min(axis=1).max()) < 0.05
  nearest = np.asarray(distance.argmin(axis=1))
  assert 0 < nearest.sum() < len(nearest)  # both modes are reached


def test_ddim_step_clips_and_keeps_z_consistent():
  z = jnp.array([[3.0, 0.1]])
  pred = jnp.zeros_like(z)  # v = 0 -> x0_hat = alpha z, eps_hat = sigma z
  t, t_next = jnp.array([0.2]), jnp.array([0.1])
  z_next, x0 = diffusion.ddim_step(z, pred, t, t_next, "v", clip=(-1.0, 1.0))
  alpha, sigma = diffusion.cosine_schedule(t)
  # NumPy and Python floats on both sides: pytest.approx reads `expected.flat`, which JAX
  # arrays do not have (pytest >= 9.2).
  got = np.asarray(x0)
  assert got[0, 0] == 1.0 and got[0, 1] == pytest.approx(float(alpha[0]) * 0.1, rel=1e-6)
  eps = (z - alpha[0] * x0) / sigma[0]
  alpha_next, sigma_next = diffusion.cosine_schedule(t_next)
  np.testing.assert_allclose(z_next, alpha_next[0] * x0 + sigma_next[0] * eps, rtol=1e-5)


def test_ddim_sample_jits_and_traces_once():
  x0 = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 3)), jnp.float32)
  denoise_traces = []

  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample(key, data):
    def denoise(z, t):
      denoise_traces.append(1)
      return _single_point_oracle(data, "v")(z, t)
    return diffusion.ddim_sample(denoise, data.shape, key, steps=20, prediction="v")

  for seed in range(3):
    np.testing.assert_allclose(sample(jax.random.key(seed), x0), x0, atol=1e-5)
  assert len(denoise_traces) == 1  # the loop is rolled: the model is traced once, not 20 times


def test_sample_times_and_loss():
  t = diffusion.sample_times(jax.random.key(0), 1000)
  assert t.shape == (1000,) and 0 <= float(t.min()) and float(t.max()) < 1
  grid = np.sort(np.asarray(diffusion.sample_times(jax.random.key(1), 8, low_discrepancy=True)))
  np.testing.assert_allclose(np.diff(grid), 1 / 8, atol=1e-6)

  pred = jnp.zeros((3, 2, 2))
  tgt = jnp.stack([jnp.full((2, 2), 1.0), jnp.full((2, 2), 2.0), jnp.full((2, 2), 100.0)])
  assert float(diffusion.diffusion_loss(pred, tgt)) == pytest.approx((1 + 4 + 1e4) / 3)
  mask = jnp.array([True, True, False])
  assert float(diffusion.diffusion_loss(pred, tgt, mask)) == pytest.approx(2.5)
  assert float(diffusion.diffusion_loss(pred, tgt, jnp.zeros(3, bool))) == 0.0


def test_x0_loss_weight_is_the_capped_v_space_weight():
  x0, noise = _data()
  t = jnp.array([0.0, 0.2, 0.6, 1.0])
  weight = diffusion.loss_weight(t, "x0")
  _, sigma = diffusion.cosine_schedule(t)
  snr = (1.0 - sigma ** 2) / sigma ** 2
  np.testing.assert_allclose(weight, 1.0 + np.minimum(snr, diffusion.SNR_CAP), rtol=1e-4)
  assert float(weight[0]) == pytest.approx(1.0 + diffusion.SNR_CAP)  # capped near t = 0
  assert float(weight[-1]) == pytest.approx(1.0, abs=1e-4)
  # Where the cap is not active the weighted x0 error equals the v-space error exactly:
  # v - v_hat = (x0_hat - x0) / sigma, and 1 / sigma^2 = 1 + SNR.
  t = jnp.full((4,), 0.7)
  z = diffusion.add_noise(x0, noise, t)
  x0_hat = x0 + 0.1 * noise
  _, eps_hat = diffusion.to_x0_eps(z, x0_hat, t, "x0")
  alpha, sigma = diffusion.cosine_schedule(t)
  v_hat = alpha[:, None, None] * eps_hat - sigma[:, None, None] * x0_hat
  v_loss = diffusion.diffusion_loss(v_hat, diffusion.target(x0, noise, t, "v"))
  x0_loss = diffusion.diffusion_loss(x0_hat, diffusion.target(x0, noise, t, "x0"),
                                     weight=diffusion.loss_weight(t, "x0"))
  np.testing.assert_allclose(x0_loss, v_loss, rtol=1e-4)
  np.testing.assert_array_equal(diffusion.loss_weight(t, "v"), 1.0)


def test_unknown_prediction_is_a_config_error():
  x0, noise = _data()
  with pytest.raises(ConfigError):
    diffusion.target(x0, noise, jnp.zeros(4), "score")
