"""The Gaussian mechanism: calibrated std, replicated across devices, exact arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxml.core import mesh as mesh_lib
from jaxml.privacy import noise
from jaxml.privacy.clipping import ClippedGrad


def _Clipped(grads, sensitivity):  # pylint: disable=invalid-name
  return ClippedGrad(grads=grads, norms=jnp.zeros(1), num_nonfinite=jnp.zeros((), jnp.int32),
                     sensitivity=sensitivity)


def test_noise_std_matches_sigma_times_sensitivity():
  clipped = _Clipped(grads={"w": jnp.zeros((200, 100)), "b": jnp.zeros(50)}, sensitivity=2.5)
  out = noise.noisy_sum(jax.random.key(0), clipped, noise_multiplier=1.3)
  samples = np.concatenate([np.ravel(out["w"]), np.ravel(out["b"])])
  sigma = 1.3 * 2.5
  # 20,050 draws: the sample std is within ~4 standard errors (sigma / sqrt(2n)) of sigma.
  assert abs(samples.std() - sigma) < 4 * sigma / np.sqrt(2 * samples.size)
  assert abs(samples.mean()) < 4 * sigma / np.sqrt(samples.size)
  # Leaves get independent noise, not the same draw.
  assert not np.allclose(np.ravel(out["w"])[:50], np.ravel(out["b"]))


def test_noisy_mean_divides_the_noisy_sum_by_expected_batch_size():
  clipped = _Clipped(grads={"w": jnp.arange(6.0).reshape(2, 3)}, sensitivity=1.0)
  key = jax.random.key(3)
  total = noise.noisy_sum(key, clipped, 0.7)
  mean = noise.noisy_mean(key, clipped, 0.7, expected_batch_size=4.0)
  np.testing.assert_allclose(mean["w"], total["w"] / 4.0, rtol=1e-6)
  zero = noise.noisy_sum(key, clipped, 0.0)
  np.testing.assert_array_equal(zero["w"], clipped.grads["w"])


def test_every_device_adds_the_same_noise():
  mesh = mesh_lib.make_mesh()
  replicated = NamedSharding(mesh, P())
  grads = jax.device_put({"w": jnp.ones((16, 4))}, replicated)
  key = jax.device_put(jax.random.key(7), replicated)
  fn = jax.jit(lambda k, g: noise.noisy_sum(k, _Clipped(grads=g, sensitivity=1.0), 1.0),
               in_shardings=(replicated, replicated), out_shardings=replicated)
  out = fn(key, grads)["w"]
  shards = [np.asarray(s.data) for s in out.addressable_shards]
  assert len(shards) == 8
  for shard in shards[1:]:
    np.testing.assert_array_equal(shard, shards[0])
  single = noise.noisy_sum(jax.random.key(7), _Clipped(grads={"w": jnp.ones((16, 4))},
                                                       sensitivity=1.0), 1.0)["w"]
  np.testing.assert_allclose(shards[0], single, rtol=1e-6, atol=1e-6)  # jit vs eager FMA
