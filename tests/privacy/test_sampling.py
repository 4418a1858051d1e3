"""Batch samplers: the distribution each accounting scheme assumes, padded to a fixed size."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from scipy import stats

from jaxml.data import pipeline
from jaxml.privacy import sampling


def test_poisson_is_a_pure_function_of_seed_and_step():
  args = (1000, 0.05, 100)
  a_idx, a_mask = sampling.poisson_batch_indices(3, 17, *args)
  b_idx, b_mask = sampling.poisson_batch_indices(3, 17, *args)
  np.testing.assert_array_equal(a_idx, b_idx)
  np.testing.assert_array_equal(a_mask, b_mask)
  assert a_idx.dtype == np.int64 and a_mask.dtype == bool and a_idx.shape == (100,)
  assert not np.array_equal(a_idx, sampling.poisson_batch_indices(3, 18, *args)[0])
  assert not np.array_equal(a_idx, sampling.poisson_batch_indices(4, 17, *args)[0])


def test_poisson_batch_sizes_and_inclusions_follow_the_model():
  n, q, steps = 400, 0.05, 3000
  size = sampling.padded_batch_size(n, q)
  counts = np.zeros(n)
  sizes = []
  for step in range(steps):
    idx, mask = sampling.poisson_batch_indices(0, step, n, q, size)
    np.add.at(counts, idx[mask], 1)
    sizes.append(mask.sum())
  sizes = np.array(sizes)
  # Batch size ~ Binomial(n, q): mean and variance within generous statistical bounds.
  mean, var = n * q, n * q * (1 - q)
  assert abs(sizes.mean() - mean) < 5 * np.sqrt(var / steps)
  assert abs(sizes.var() / var - 1) < 0.15
  # Each example is included with probability q: overall rate by a z-test, and the
  # per-example counts uniform by a chi-square test.
  rate = counts.sum() / (n * steps)
  assert abs(rate - q) < 5 * np.sqrt(q * (1 - q) / (n * steps))
  assert stats.chisquare(counts).pvalue > 1e-4
  # and each example's own count is Binomial(steps, q) (all within 6 standard deviations)
  assert np.all(np.abs(counts - steps * q) < 6 * np.sqrt(steps * q * (1 - q)))


def test_padded_batch_size_is_the_binomial_quantile():
  n, q = 50_000, 0.01
  size = sampling.padded_batch_size(n, q, failure_prob=1e-9)
  assert size == int(stats.binom.ppf(1 - 1e-9, n, q))
  assert stats.binom.sf(size, n, q) <= 1e-9 < stats.binom.sf(size - 1, n, q)
  rounded = sampling.padded_batch_size(n, q, failure_prob=1e-9, multiple_of=8)
  assert rounded % 8 == 0 and size <= rounded < size + 8
  assert sampling.padded_batch_size(n, q, failure_prob=1e-3) < size


def test_poisson_overflow_raises_naming_the_step():
  with pytest.raises(RuntimeError, match="step 7.*padded batch size 10"):
    sampling.poisson_batch_indices(0, 7, 1000, 0.5, 10)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), q=st.floats(1e-3, 1.0), seed=st.integers(0, 2**31),
       step=st.integers(0, 10**6))
def test_poisson_indices_are_valid_and_padding_is_inert(n, q, seed, step):
  size = sampling.padded_batch_size(n, q)
  assert size <= n or n * q < 1  # the quantile never asks for more rows than examples
  idx, mask = sampling.poisson_batch_indices(seed, step, n, q, size)
  assert idx.shape == mask.shape == (size,)
  valid = idx[mask]
  assert len(np.unique(valid)) == len(valid)
  assert np.all((valid >= 0) & (valid < n))
  assert np.all(np.diff(valid) > 0)
  assert np.all(idx[~mask] == 0)
  assert np.all(mask[:mask.sum()])  # real rows first, then padding


def test_shuffled_equals_the_pipeline_order():
  n, batch = 103, 16  # batches straddle epoch boundaries
  for step in range(30):
    np.testing.assert_array_equal(sampling.shuffled_batch_indices(5, step, n, batch),
                                  pipeline.batch_indices(5, step, batch, n))


def test_shuffled_uses_each_example_once_per_epoch():
  n, batch = 120, 12
  epoch = np.concatenate([sampling.shuffled_batch_indices(1, s, n, batch) for s in range(10)])
  np.testing.assert_array_equal(np.sort(epoch), np.arange(n))


def test_fixed_size_draws_a_fresh_uniform_subset_every_step():
  n, batch, steps = 200, 10, 4000
  counts = np.zeros(n)
  for step in range(steps):
    idx = sampling.fixed_size_batch_indices(2, step, n, batch)
    assert idx.dtype == np.int64 and len(np.unique(idx)) == batch
    assert np.all((idx >= 0) & (idx < n))
    counts[idx] += 1
  np.testing.assert_array_equal(sampling.fixed_size_batch_indices(2, 9, n, batch),
                                sampling.fixed_size_batch_indices(2, 9, n, batch))
  assert stats.chisquare(counts).pvalue > 1e-4
  assert np.all(np.abs(counts - steps * batch / n) < 6 * np.sqrt(steps * batch / n))
