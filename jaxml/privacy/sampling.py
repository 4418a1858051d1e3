"""Batch selection for DP-SGD, each scheme a pure function of (seed, step) on the host.

Which sampler is accounted as what (`jaxml.privacy.accounting` has the details):

- `poisson_batch_indices`: Poisson sampling, accounted with `sampling="poisson"`
  (PoissonSampledDpEvent, add/remove-one). The batch has a random size, padded with a mask
  to a fixed `max_batch_size` so the jitted step compiles once.
- `fixed_size_batch_indices`: a fresh uniform subset of exactly b examples every step,
  accounted with `sampling="without_replacement"` (SampledWithoutReplacementDpEvent,
  replace-one, RDP only).
- `shuffled_batch_indices`: consecutive slices of a per-epoch permutation, the training
  order of `jaxml.data.pipeline`; accounted with `sampling="shuffle"` (no amplification:
  one Gaussian release per epoch an example takes part in, replace-one).

Using a sampler with another scheme's accounting reports a wrong ε.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from jaxml.data import pipeline

# Mixed into the seed so these streams differ from the pipeline's epoch permutations
# (`default_rng([seed, epoch])`), which a run with the same seed also draws.
_POISSON_STREAM = 0x9015
_FIXED_SIZE_STREAM = 0xF12E


def padded_batch_size(num_examples: int, sampling_probability: float,
                      failure_prob: float = 1e-9, multiple_of: int = 1) -> int:
  """A size that a Poisson batch exceeds with probability <= `failure_prob` per step.

  The (1 - failure_prob) quantile of Binomial(n, q), rounded up to a multiple of
  `multiple_of` (e.g. the device count, so the padded batch shards evenly).
  """
  quantile = int(stats.binom.ppf(1.0 - failure_prob, num_examples, sampling_probability))
  size = max(quantile, 1)
  return -(-size // multiple_of) * multiple_of


def poisson_batch_indices(seed: int, step: int, num_examples: int,
                          sampling_probability: float,
                          max_batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices [max_batch_size] int64, mask [max_batch_size] bool) of step `step`'s batch.

  Guarantee: each example is in the batch independently with probability q, as
  PoissonSampledDpEvent assumes. Drawn as a Binomial(n, q) size and then a uniform subset
  of that size, which is the same distribution and costs O(size), not O(n). The sampled
  indices come first, sorted; padding rows have index 0 and mask False.

  Raises RuntimeError if more than `max_batch_size` examples are drawn: dropping some
  would change the mechanism (truncated Poisson sampling has a different ε), so the run
  stops rather than report a wrong ε. With `padded_batch_size` this happens with
  probability `failure_prob` per step.
  """
  rng = np.random.default_rng([_POISSON_STREAM, seed, step])
  size = int(rng.binomial(num_examples, sampling_probability))
  if size > max_batch_size:
    raise RuntimeError(
        f"Poisson sampling drew {size} examples at step {step}, more than the padded "
        f"batch size {max_batch_size}; truncating would invalidate the privacy "
        "accounting. Use a larger max_batch_size (see padded_batch_size).")
  chosen = np.sort(rng.choice(num_examples, size=size, replace=False, shuffle=False))
  indices = np.zeros(max_batch_size, np.int64)
  indices[:size] = chosen
  mask = np.zeros(max_batch_size, bool)
  mask[:size] = True
  return indices, mask


def fixed_size_batch_indices(seed: int, step: int, num_examples: int,
                             batch_size: int) -> np.ndarray:
  """`batch_size` distinct indices, a uniform subset drawn afresh (independently) each step.

  Guarantee: the sampling SampledWithoutReplacementDpEvent describes; an example may be in
  consecutive batches or in none of an epoch's.
  """
  rng = np.random.default_rng([_FIXED_SIZE_STREAM, seed, step])
  return np.sort(rng.choice(num_examples, size=batch_size, replace=False)).astype(np.int64)


def shuffled_batch_indices(seed: int, step: int, num_examples: int,
                           batch_size: int) -> np.ndarray:
  """The pipeline's training batch: step `step`'s slice of the per-epoch permutations.

  Each example is used once per epoch; accounted by `sampling="shuffle"`, which claims no
  amplification from the shuffling.
  """
  return pipeline.batch_indices(seed, step, batch_size, num_examples)
