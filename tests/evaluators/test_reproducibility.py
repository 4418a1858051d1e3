"""The prediction-difference metrics against looped float64 NumPy versions of their formulas."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxml.errors import ConfigError
from jaxml.evaluators import reproducibility as rp

N, C, Q, L = 64, 5, 12, 20  # N divides by the 8 test devices


def ref_relative_pd(p1, p2, mask):
  terms = [0.0 if a == b == 0 else abs(a - b) / ((a + b) / 2)
           for a, b, m in zip(p1, p2, mask) if m]
  return np.mean(terms)


def ref_l1_pd(q1, q2, mask):
  return np.mean([sum(abs(a - b) for a, b in zip(r1, r2))
                  for r1, r2, m in zip(q1, q2, mask) if m])


def ref_top1(q1, q2, mask):
  return np.mean([np.argmax(r1) != np.argmax(r2) for r1, r2, m in zip(q1, q2, mask) if m])


def ref_topk(s1, s2, k, mask):
  def top(scores):  # a stable sort of -s ranks equal scores by lower index, as lax.top_k does
    return set(np.argsort(-scores, kind="stable")[:k].tolist())
  return np.mean([len(top(a) - top(b)) / k for a, b, m in zip(s1, s2, mask) if m])


def with_padding(rng, *arrays):
  """A mask with ~1/4 padding rows, and the arrays with NaN garbage in those rows."""
  mask = rng.random(len(arrays[0])) > 0.25
  mask[0] = True
  padded = []
  for a in arrays:
    a = np.array(a, np.float32)
    a[~mask] = np.nan
    padded.append(a)
  return mask, padded


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def probs(rng, shape):
  p = rng.random(shape).astype(np.float32)
  p.flat[:3] = 0.0  # both-zero and one-zero examples
  return p


def dists(rng):
  return jax.nn.softmax(jnp.asarray(rng.normal(size=(N, C)), jnp.float32) * 2).__array__()


def test_relative_pd_matches_reference(rng):
  p1, p2 = probs(rng, N), probs(rng, N)
  p2[1] = 0.3  # one zero, one not: the term is 2
  np.testing.assert_allclose(rp.relative_pd(p1, p2), ref_relative_pd(p1, p2, [1] * N),
                             rtol=1e-5)
  mask, (m1, m2) = with_padding(rng, p1, p2)
  np.testing.assert_allclose(rp.relative_pd(m1, m2, mask), ref_relative_pd(p1, p2, mask),
                             rtol=1e-5)


def test_relative_pd_both_zero_is_agreement_with_finite_gradient():
  zeros = jnp.zeros(4)
  assert float(rp.relative_pd(zeros, zeros)) == 0.0
  grad = jax.grad(rp.relative_pd)(zeros, zeros + jnp.array([0.0, 0.1, 0.2, 0.3]))
  assert np.all(np.isfinite(grad))


def test_l1_pd_matches_reference(rng):
  q1, q2 = dists(rng), dists(rng)
  np.testing.assert_allclose(rp.l1_pd(q1, q2), ref_l1_pd(q1, q2, [1] * N), rtol=1e-5)
  mask, (m1, m2) = with_padding(rng, q1, q2)
  np.testing.assert_allclose(rp.l1_pd(m1, m2, mask), ref_l1_pd(q1, q2, mask), rtol=1e-5)


def test_top1_disagreement_matches_reference(rng):
  q1, q2 = dists(rng), dists(rng)
  np.testing.assert_allclose(rp.top1_disagreement(q1, q2), ref_top1(q1, q2, [1] * N),
                             rtol=1e-6)
  mask, (m1, m2) = with_padding(rng, q1, q2)
  np.testing.assert_allclose(rp.top1_disagreement(m1, m2, mask), ref_top1(q1, q2, mask),
                             rtol=1e-6)


@pytest.mark.parametrize("k", [1, 3, L])
def test_topk_swap_rate_matches_reference(rng, k):
  s1 = rng.normal(size=(Q, L)).astype(np.float32)
  s2 = (s1 + rng.normal(size=(Q, L)) * 0.5).astype(np.float32)
  np.testing.assert_allclose(rp.topk_swap_rate(s1, s2, k), ref_topk(s1, s2, k, [1] * Q),
                             rtol=1e-6, atol=1e-7)
  mask, (m1, m2) = with_padding(rng, s1, s2)
  np.testing.assert_allclose(rp.topk_swap_rate(m1, m2, k, mask), ref_topk(s1, s2, k, mask),
                             rtol=1e-6, atol=1e-7)


def test_topk_swap_rate_ties_and_single_query():
  s1 = np.array([1.0, 1.0, 1.0, 0.0], np.float32)  # ties: items 0 and 1 win
  s2 = np.array([0.0, 1.0, 1.0, 1.0], np.float32)  # ties: items 1 and 2 win
  assert float(rp.topk_swap_rate(s1, s2, 2)) == pytest.approx(0.5)
  assert float(rp.topk_swap_rate(s1, s2, 2)) == pytest.approx(ref_topk([s1], [s2], 2, [1]))
  # Order within the top k does not count; disjoint top-k sets swap everything.
  assert float(rp.topk_swap_rate(np.array([3.0, 2.0, 0.0]), np.array([2.0, 3.0, 0.0]), 2)) == 0
  assert float(rp.topk_swap_rate(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 1)) == 1


def pairs_of_inputs(rng):
  """(name, metric, a, b) for every metric on random inputs with a padding mask."""
  q1, q2 = dists(rng), dists(rng)
  p1, p2 = probs(rng, N), probs(rng, N)
  s1, s2 = rng.normal(size=(2, Q, L)).astype(np.float32)
  mask_n, mask_q = rng.random(N) > 0.2, rng.random(Q) > 0.2
  return [
      ("relative_pd", functools.partial(rp.relative_pd, mask=mask_n), p1, p2),
      ("l1_pd", functools.partial(rp.l1_pd, mask=mask_n), q1, q2),
      ("top1_disagreement", functools.partial(rp.top1_disagreement, mask=mask_n), q1, q2),
      ("topk_swap_rate", functools.partial(rp.topk_swap_rate, k=4, mask=mask_q), s1, s2),
  ]


def test_identical_replicas_give_zero_and_metrics_are_symmetric(rng):
  for name, metric, a, b in pairs_of_inputs(rng):
    assert float(metric(a, a)) == 0.0, name
    assert float(metric(a, b)) > 0.0, name
    np.testing.assert_allclose(metric(a, b), metric(b, a), rtol=1e-6, err_msg=name)


def test_over_replicas_matches_loop_over_pairs(rng):
  replicas = 4
  base = dists(rng)
  # Replicas near a shared prediction, so the pairs' values differ and the std means something.
  stacked = np.stack([base + rng.normal(size=base.shape).astype(np.float32) * 0.05 * (r + 1)
                      for r in range(replicas)])
  for metric in (rp.l1_pd, rp.top1_disagreement):
    values = [float(metric(stacked[i], stacked[j]))
              for i, j in itertools.combinations(range(replicas), 2)]
    stats = jax.jit(rp.over_replicas, static_argnums=0)(metric, stacked)
    assert int(stats.num_pairs) == 6
    np.testing.assert_allclose(stats.mean, np.mean(values), rtol=1e-5)
    np.testing.assert_allclose(stats.std, np.std(values, ddof=1), rtol=1e-4)


def test_over_replicas_two_replicas_has_no_std(rng):
  p = probs(rng, (2, N))
  stats = rp.over_replicas(rp.relative_pd, p)
  assert stats.num_pairs == 1
  np.testing.assert_allclose(stats.mean, rp.relative_pd(p[0], p[1]), rtol=1e-6)
  assert np.isnan(stats.std)


@pytest.mark.parametrize("replicas", [0, 1])
def test_over_replicas_needs_two_replicas(replicas):
  with pytest.raises(ConfigError, match=f"needs at least 2 replicas, got {replicas}"):
    rp.over_replicas(rp.relative_pd, jnp.zeros((replicas, N)))


def test_relative_pd_sharded_equals_unsharded(rng):
  assert len(jax.devices()) == 8
  p1, p2 = probs(rng, N), probs(rng, N)
  mask = rng.random(N) > 0.25
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  rows = NamedSharding(mesh, P("data"))
  sharded = [jax.device_put(x, rows) for x in (p1, p2, mask)]
  assert len(sharded[0].sharding.device_set) == 8
  jitted = jax.jit(rp.relative_pd)
  np.testing.assert_allclose(jitted(*sharded), jitted(p1, p2, mask), rtol=1e-6)
  np.testing.assert_allclose(jitted(p1, p2, mask), ref_relative_pd(p1, p2, mask), rtol=1e-5)


def test_bad_inputs_raise_config_error(rng):
  p = probs(rng, N)
  with pytest.raises(ConfigError, match="same shape"):
    rp.relative_pd(p, p[:, None])  # would broadcast to [N, N] unchecked
  with pytest.raises(ConfigError, match="mask must have shape"):
    rp.relative_pd(p, p, p[:-1] > 0)
  with pytest.raises(ConfigError, match="k must be an int"):
    rp.topk_swap_rate(np.zeros((Q, L)), np.zeros((Q, L)), L + 1)
  with pytest.raises(ConfigError, match="scalar per pair"):
    rp.over_replicas(lambda a, b: jnp.abs(a - b), jnp.zeros((3, N)))


def test_all_padding_is_nan_not_zero(rng):
  p = probs(rng, N)
  assert np.isnan(rp.relative_pd(p, p, np.zeros(N, bool)))
